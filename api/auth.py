"""Bearer tokens on the API: which scope a route needs (api.tokens), the answers a client gets
(RFC 6750: 401 with `WWW-Authenticate: Bearer`, 403 `insufficient_scope`), and what a failed
attempt costs.

A presented token that is unknown, revoked or expired is a failed authentication: one warning
with the client's address (never the token), and one request out of that address's bucket.
An address whose bucket is empty gets 429 before its token is looked at, so guessing goes no
faster than the refill. A request without credentials is not an attempt and costs nothing.
The address is the peer's: behind a reverse proxy every client shares the proxy's bucket.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial

import structlog
from aiohttp import web

from api.errors import Handler, json_error, route_of
from api.limits import Buckets
from api.state import FAILURES, TOKENS
from api.tokens import Grant, Scope, allows

FAILURE_BURST = 10
FAILURE_PER_S = 1 / 6  # ten a minute once the burst is spent
ADDRESSES_MAX = 10_000
CHALLENGE = 'Bearer realm="vigil"'
ASK = "send Authorization: Bearer <token> (vigil tokens create)"
log = structlog.get_logger(component="api.auth")


def failure_buckets() -> Buckets:
    return Buckets(FAILURE_BURST, FAILURE_PER_S, ADDRESSES_MAX)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def unauthorized(message: str, error: str | None = None) -> web.HTTPException:
    challenge = CHALLENGE if error is None else f'{CHALLENGE}, error="{error}"'
    return json_error(partial(web.HTTPUnauthorized, headers={"WWW-Authenticate": challenge}),
                      message)


def too_many(wait_s: int, message: str) -> web.HTTPException:
    return json_error(partial(web.HTTPTooManyRequests, headers={"Retry-After": str(wait_s)}),
                      message, retry_after_s=wait_s)


def throttle(request: web.Request) -> None:
    """429 for an address that has used up its failed attempts."""
    wait = request.app[FAILURES].wait_s(_client(request))
    if wait:
        raise too_many(wait, "too many failed authentications from this address; retry later")


def failed(request: web.Request, reason: str) -> None:
    request.app[FAILURES].take(_client(request))
    log.warning("authentication failed", client=_client(request), reason=reason,
                method=request.method, route=route_of(request))


async def grant_of(request: web.Request) -> Grant | None:
    """The request's valid token, None when it sends none; 401 (or 429) for a bad one."""
    header = request.headers.get("Authorization", "")
    if not header.strip():
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized(ASK, "invalid_request")
    throttle(request)
    grant = await request.app[TOKENS].grant(token.strip())
    if grant is None or grant.expired:
        reason = "unknown or revoked token" if grant is None else "token expired"
        failed(request, reason)
        raise unauthorized(reason, "invalid_token")
    return grant


async def token_name(request: web.Request) -> str:
    """The name of the token a `requires` handler was called with: who acknowledged, wrote
    a note, paused dispatch. (`requires` has checked the token; this reads it again, one more
    indexed read.)"""
    grant = await grant_of(request)
    assert grant is not None
    return grant.name


def requires(scope: Scope) -> Callable[[Handler], Handler]:
    """A handler that runs only for a valid token whose scope includes `scope`."""

    def guard(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            grant = await grant_of(request)
            if grant is None:
                raise unauthorized(ASK)
            if not allows(grant.scope, scope):
                challenge = f'{CHALLENGE}, error="insufficient_scope", scope="{scope}"'
                raise json_error(partial(web.HTTPForbidden,
                                         headers={"WWW-Authenticate": challenge}),
                                 "insufficient_scope", needed_scope=scope,
                                 token_scope=grant.scope)
            return await handler(request)

        return checked

    return guard
