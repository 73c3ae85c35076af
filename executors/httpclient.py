"""A lean HTTP/1.1 client for uptime checks: one request on one fresh connection, then close.

An asyncio Protocol feeds the bytes to httptools (llhttp) and keeps only what a check asserts
on: the status, the headers and the body up to a cap. No pooling, keep-alive, cookies or
decompression (the request asks for `identity`). Every failure raises `FetchError` with a
stable kind (dns, dns_timeout, connect, tls and its precise tls_untrusted, tls_expired,
tls_hostname, protocol, reset, empty_reply), so the caller turns it into a `down`; a target
the guard denies raises its `Denied` before any connection (engine.guard).
The transport is always aborted at the end, also when the caller is cancelled by its
timeout: `abort()` rather than `close()` so a TLS peer cannot keep the socket open for the
close_notify exchange.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httptools

from engine.guard import ConnectError, Guard, connect, os_reason
from engine.resolver import ResolveError, Resolver
from executors.certs import verify_kind

MAX_HEAD = 64 * 1024
# Bytes read beyond the head and twice the body cap (chunk framing, trailers) before reading
# stops: a body cap alone would not bound a server that streams endless trailers.
WIRE_SLACK = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
USER_AGENT = "Vigil/0.1 (uptime check)"
_DEFAULT_HEADERS = (("User-Agent", USER_AGENT), ("Accept", "*/*"),
                    # identity: keyword and JSON assertions read the body as sent, and
                    # decompressing would cost CPU and memory a cap could not bound
                    ("Accept-Encoding", "identity"))


class FetchError(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


def build_request(method: str, target: str, host: str, headers: Sequence[tuple[str, str]],
                  body: bytes | None) -> bytes:
    """The request as written. The caller's headers win over the defaults (Host included);
    `Connection: close` and `Content-Length` are always the client's own."""
    given = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in _DEFAULT_HEADERS if name.lower() not in given]
    lines.append("Connection: close")
    if body is not None or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body or b'')}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass(frozen=True, slots=True)
class Request:
    host: str  # what is resolved and, over TLS, sent as SNI and checked against the cert
    port: int
    tls: bool
    data: bytes  # the request head and body, as written
    head_only: bool = False  # HEAD: the response has headers only, whatever they announce


class Timings:
    """Time spent in each phase that completed, in ms, summed over the hops of a redirect chain:
    dns (0 when cached or an IP literal), connect, tls, first_byte (request written to the
    first response byte)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def add(self, phase: str, ms: float) -> None:
        """Kept to the microsecond as it is added: the result carries these numbers."""
        self.phases[phase] = round(self.phases.get(phase, 0.0) + ms, 3)


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    truncated: bool  # the body went on past the cap and was not read
    cert_expiry_ms: int | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header; `name` in lower case."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


class _ResponseReader(asyncio.Protocol):
    """Collects one response from the parser's callbacks into `done`."""

    def __init__(self, done: asyncio.Future[Response], max_body: int, head_only: bool) -> None:
        self.done = done
        self.max_body = max_body
        self.head_only = head_only
        self.first_byte_at = 0.0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.received = 0
        self.max_received = MAX_HEAD + 2 * max_body + WIRE_SLACK
        self.header_bytes = 0  # in the headers as parsed
        self.headers_done = False
        self.interim = False  # inside a 1xx response: its end is not the end of ours
        self.until_eof = False  # no length and not chunked: the body ends when the server closes
        self.parser = httptools.HttpResponseParser(self)
        # The leniencies aiohttp's client uses: real servers send bare LFs and the like, and
        # an uptime check must not call a site down that every browser reads.
        self.parser.set_dangerous_leniencies(lenient_headers=True,
                                             lenient_optional_cr_before_lf=True,
                                             lenient_spaces_after_chunk_size=True)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        if not self.first_byte_at:
            self.first_byte_at = time.perf_counter()
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish()
        except httptools.HttpParserError as exc:
            self._fail("protocol", f"malformed response: {exc}")
        if not self.headers_done and self.received > MAX_HEAD:
            self._fail("protocol", f"response head longer than {MAX_HEAD} bytes")
        elif self.received > self.max_received:
            self._finish(truncated=True)

    def eof_received(self) -> bool:
        self._closed(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # trailers after a chunked body are not kept
            self.headers.append((name, value))
            self.header_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        if self.done.done():  # a second response after ours, in the same read
            return
        # The byte count in data_received bounds memory; this catches a head that was too
        # long but arrived complete within the last read.
        if self.header_bytes > MAX_HEAD:
            self._fail("protocol", f"response head longer than {MAX_HEAD} bytes")
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True
            self.headers.clear()
            return
        self.status = status
        self.headers_done = True
        if self.head_only or status == 101:
            self._finish()
            return
        names = {name.lower() for name, _ in self.headers}
        self.until_eof = (status not in _NO_BODY_STATUS and b"content-length" not in names
                          and b"transfer-encoding" not in names)

    def on_body(self, chunk: bytes) -> None:
        if self.done.done():
            return
        room = self.max_body - len(self.body)
        if len(chunk) > room:
            self.body += chunk[:room]
            self._finish(truncated=True)
        else:
            self.body += chunk

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        else:
            self._finish()

    # outcomes

    def _finish(self, truncated: bool = False) -> None:
        if not self.done.done():
            self.done.set_result(Response(self.status, self.headers, bytes(self.body),
                                          truncated))

    def _fail(self, kind: str, message: str) -> None:
        if not self.done.done():
            self.done.set_exception(FetchError(kind, message))

    def discard(self) -> None:
        """The caller is done with this response, whatever it became: a failure set after a
        failed handshake (connection_lost) must not be logged as never retrieved."""
        if not self.done.done():
            self.done.cancel()
        elif not self.done.cancelled():
            self.done.exception()

    def _closed(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None and self.headers_done and self.until_eof:
            self._finish()
        elif exc is not None and not isinstance(exc, ConnectionError):
            self._fail("protocol", f"connection failed mid-response: {exc!r}")
        elif not self.first_byte_at:
            # A FIN with nothing before it is a server that took the request and gave up on
            # it (a crashed worker, a proxy with no upstream); an RST is the network or a
            # firewall cutting in: they call for different fixes.
            if exc is None:
                self._fail("empty_reply", "connection closed without a response")
            else:
                self._fail("reset", f"connection reset without a response ({exc})")
        else:
            self._fail("reset", "connection closed before the response completed"
                       if exc is None else f"connection reset mid-response ({exc})")


async def _handshake(transport: asyncio.Transport, reader: _ResponseReader,
                     ctx: ssl.SSLContext, host: str) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    try:
        tls = await loop.start_tls(transport, reader, ctx, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(verify_kind(exc), f"certificate verify failed: {exc.verify_message}"
                         ) from None
    except ssl.SSLError as exc:
        raise FetchError("tls", f"handshake failed: {exc.reason or exc}") from None
    except ConnectionResetError:  # an RST as the connection opens, TLS or not
        raise FetchError("reset", "connection reset during the TLS handshake") from None
    except OSError as exc:
        reason = os_reason(exc) if exc.errno != errno.EPIPE else "connection closed"
        raise FetchError("tls", f"handshake failed: {reason}") from None
    if tls is None:
        raise FetchError("tls", "handshake failed: connection closed")
    return tls


def _expiry_ms(transport: asyncio.Transport) -> int | None:
    """notAfter of a verified peer certificate (getpeercert() is empty when not verified)."""
    cert = transport.get_extra_info("peercert")
    not_after = cert.get("notAfter") if isinstance(cert, dict) else None
    if not isinstance(not_after, str):
        return None
    try:
        return int(ssl.cert_time_to_seconds(not_after)) * 1000
    except ValueError:
        return None


async def fetch(request: Request, guard: Guard, resolver: Resolver, tls: ssl.SSLContext | None,
                max_body: int, timings: Timings, lookup_s: float) -> Response:
    """One request on a fresh connection to an address the guard allows (else Denied), its
    name resolved within `lookup_s`; phases are added to `timings` as they complete."""
    start = time.perf_counter()
    try:
        addresses, looked_up = await guard.resolve(resolver, request.host, request.port,
                                                   lookup_s)
    except ResolveError as exc:
        raise FetchError(exc.kind, str(exc)) from None
    timings.add("dns", _ms_since(start) if looked_up else 0.0)
    loop = asyncio.get_running_loop()
    reader = _ResponseReader(loop.create_future(), max_body, request.head_only)
    start = time.perf_counter()
    try:
        transport, _ = await connect(addresses, request.port, lambda family, ip: (
            loop.create_connection(lambda: reader, ip, request.port, family=family)))
    except ConnectError as exc:
        raise FetchError("connect", str(exc)) from None
    try:
        timings.add("connect", _ms_since(start))
        expiry = None
        if request.tls:
            assert tls is not None, "an https request comes with its SSL context"
            start = time.perf_counter()
            transport = await _handshake(transport, reader, tls, request.host)
            timings.add("tls", _ms_since(start))
            expiry = _expiry_ms(transport)
        sent = time.perf_counter()
        transport.write(request.data)
        response = await reader.done
        # A server may answer before reading the request: never a negative phase.
        timings.add("first_byte", max(0.0, reader.first_byte_at - sent) * 1000)
        response.cert_expiry_ms = expiry
        return response
    finally:
        transport.abort()
        reader.discard()
