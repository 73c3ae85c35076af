"""What the API takes as text: nothing Postgres text cannot store. A NUL character is a
valid URL byte (`%00`), but Postgres refuses it in text and jsonb, so a request carrying one
would otherwise end as a 500 from the driver instead of the client's 400 (found by the
schemathesis run, tests/integration/test_openapi_fuzz.py); in a definition it is the
definition's own error (engine.monitors)."""

from __future__ import annotations

from aiohttp import web

from api.errors import Handler, json_error

NUL = "\x00"


@web.middleware
async def nul_free(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in the path or the query string, before any handler looks it up."""
    if NUL in request.path or any(NUL in k or NUL in v for k, v in request.query.items()):
        raise json_error(web.HTTPBadRequest, "a NUL character in the path or query")
    return await handler(request)
