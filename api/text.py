"""What the API takes as text: nothing Postgres text cannot store. A NUL character is valid
JSON (`\\u0000`) and a valid URL byte (`%00`), but Postgres refuses it in text and jsonb, so
a request carrying one would otherwise end as a 500 from the driver instead of the client's
400 or 422 (found by the schemathesis run, tests/integration/test_openapi_fuzz.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.errors import Handler, json_error

NUL = "\x00"


def nul_at(data: Any) -> str | None:
    """The dotted path (`tags.3`, `http.headers.X`) of the first key or string in `data`
    that holds a NUL, "" for `data` itself; None when there is none."""
    # A stack, not recursion: a body nested a thousand deep is still only a 422.
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return path
            continue
        items = value.items() if isinstance(value, dict) else (
            enumerate(value) if isinstance(value, list) else ())
        for key, item in items:
            where = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                return where
            stack.append((where, item))
    return None


@web.middleware
async def nul_free(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in the path or the query string, before any handler looks it up."""
    if NUL in request.path or any(NUL in k or NUL in v for k, v in request.query.items()):
        raise json_error(web.HTTPBadRequest, "a NUL character in the path or query")
    return await handler(request)
