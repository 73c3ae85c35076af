"""The chain of requests of one check: the first hop is the plan's, each redirect followed
(when the spec asks) is a new hop on a fresh connection, as browsers follow them."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin

from pydantic import HttpUrl

from executors.base import Context
from executors.httpclient import FetchError, Request, Response, Timings, build_request, fetch
from executors.kinds.http.spec import HttpSpec, request_url

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Dropped when a redirect leaves the origin, as browsers and curl do.
ORIGIN_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "host"})


@dataclass(frozen=True, slots=True)
class Hop:
    """One request of the chain: the first is the spec's, the next ones follow redirects."""

    url: HttpUrl
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    request: Request  # built once: the first hop's bytes are reused by every check of a spec

    @classmethod
    def of(cls, url: HttpUrl, method: str, headers: tuple[tuple[str, str], ...],
           body: bytes | None) -> Hop:
        host = url.host or ""
        tls = url.scheme == "https"
        default_port = 443 if tls else 80
        port = url.port or default_port
        authority = host if port == default_port else f"{host}:{port}"
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        data = build_request(method, target, authority, headers, body)
        request = Request(host.strip("[]"), port, tls, data, head_only=method == "HEAD")
        return cls(url, method, headers, body, request)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, str(self.url).split("#", 1)[0]


def _next_hop(hop: Hop, status: int, location: bytes) -> Hop:
    try:
        text = location.decode()
    except UnicodeDecodeError:
        text = location.decode("latin-1")
    try:
        url = request_url(urljoin(str(hop.url), text.strip()))
    except ValueError:
        raise FetchError("redirects", f"redirect to an invalid URL: {text[:200]!r}",
                         status) from None
    method, body = hop.method, hop.body
    # What browsers do: 303 turns into a GET, and so does a 301/302 answering a POST.
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
    headers = hop.headers
    if (url.scheme, url.host, url.port) != (hop.url.scheme, hop.url.host, hop.url.port):
        headers = tuple(h for h in headers if h[0].lower() not in ORIGIN_HEADERS)
    return Hop.of(url, method, headers, body)


async def exchange(spec: HttpSpec, first: Hop, ctx: Context, tls: ssl.SSLContext,
                   timings: Timings, within_s: float) -> tuple[Response, int | None]:
    """The final response and the earliest certificate expiry met along the way, every https
    hop verified with `tls`; every hop's name lookup ends within what is left of `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    hop = first
    seen: set[tuple[str, str]] = set()  # filled as redirects are followed: most checks have none
    expiry: int | None = None
    redirects = 0
    while True:
        response = await fetch(hop.request, ctx.guard, ctx.resolver, tls, spec.max_body_bytes,
                               timings, deadline - loop.time())
        if response.cert_expiry_ms is not None:
            expiry = (response.cert_expiry_ms if expiry is None
                      else min(expiry, response.cert_expiry_ms))
        location = response.header(b"location")
        if not (spec.follow_redirects and response.status in REDIRECT_STATUS and location):
            return response, expiry
        if redirects == spec.max_redirects:
            raise FetchError("redirects", f"more than {spec.max_redirects} redirects",
                             response.status)
        redirects += 1
        seen.add(hop.key)
        hop = _next_hop(hop, response.status, location)
        if hop.key in seen:
            raise FetchError("redirects", f"redirect loop: back to {hop.key[1]}",
                             response.status)
