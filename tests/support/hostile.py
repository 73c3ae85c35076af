"""Hostile servers for check tests (TCP, TLS, HTTP): raw asyncio servers on 127.0.0.1, each
misbehaving in one precise way, recording what it saw of every connection (bytes sent, when
the client went away), and the certificates to serve (trustme for a CA, cryptography for a
self-signed leaf).

    async with RawServer(drip(b"HTTP/1.1 200 OK\\r\\n", every_s=1.0)) as server:
        ... check server.url("/") ...
        assert server.seen[0].closed is not None
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.helpers import wait_for

CHUNK = 64 * 1024
HEAD_END = b"\r\n\r\n"


@dataclass
class Seen:
    """One connection, as the server saw it."""

    opened: float = field(default_factory=time.monotonic)
    request: bytes = b""
    sent: int = 0
    closed: float | None = None  # when the server noticed the client had gone


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Seen], Awaitable[None]]


class RawServer:
    """An asyncio server on 127.0.0.1 (TLS if `tls` is given) running `handler` per connection."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.seen: list[Seen] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    @property
    def active(self) -> int:
        return sum(not t.done() for t in self._tasks)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        # Aborting the connections ends every handler; cancelling their tasks instead would
        # upset asyncio's own done-callback on them.
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        seen = Seen()
        self.seen.append(seen)
        try:
            await self.handler(reader, writer, seen)
        except (ConnectionError, ssl.SSLError):
            seen.closed = seen.closed or time.monotonic()
        finally:
            writer.transport.abort()

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Until every connection's handler has ended (its socket closed)."""
        async def idle() -> bool:
            return not self.active

        await wait_for(idle, timeout=timeout, every=0.01)


async def read_head(reader: asyncio.StreamReader, seen: Seen) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        seen.request = await reader.readuntil(HEAD_END)


async def until_closed(reader: asyncio.StreamReader, seen: Seen) -> None:
    """Read and drop whatever comes until the client closes (EOF) or resets the connection."""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while await reader.read(CHUNK):
            pass
    seen.closed = seen.closed or time.monotonic()


async def send(writer: asyncio.StreamWriter, seen: Seen, data: bytes) -> None:
    """Write `data`, count it as sent, and wait while the client is slow to take it."""
    writer.write(data)
    seen.sent += len(data)
    await writer.drain()


def close_with_rst(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with an RST instead of a FIN (linger 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --- handlers ----------------------------------------------------------------------------------

def answer(response: bytes, then_close: bool = False) -> Handler:
    """Read the request head, send `response` as is, then close (a body that ends with the
    connection) or wait for the client to hang up."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: Seen) -> None:
        await read_head(reader, seen)
        await send(writer, seen, response)
        if then_close:
            writer.close()
            await writer.wait_closed()
        else:
            await until_closed(reader, seen)
    return handle


def streaming(produce: Callable[[asyncio.StreamWriter, Seen], Awaitable[None]]) -> Handler:
    """Read the request head, then `produce` until done or until the client hangs up."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: Seen) -> None:
        await read_head(reader, seen)
        sender = asyncio.create_task(produce(writer, seen))
        try:
            await until_closed(reader, seen)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return handle


def drip(data: bytes, every_s: float) -> Handler:
    """Send `data` one byte every `every_s` seconds (headers that never end, in practice)."""
    async def trickle(writer: asyncio.StreamWriter, seen: Seen) -> None:
        for byte in data:
            await send(writer, seen, bytes([byte]))
            await asyncio.sleep(every_s)

    return streaming(trickle)


def endless_body(size: int) -> Handler:
    """Announce `size` bytes of body and stream zeros as fast as the client reads them."""
    async def flood(writer: asyncio.StreamWriter, seen: Seen) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        zeros = bytes(CHUNK)
        while seen.sent < size:
            await send(writer, seen, zeros)

    return streaming(flood)


def cut_off(partial: bytes, reset: bool) -> Handler:
    """Send the start of a response, then reset the connection (RST) or close it (FIN)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: Seen) -> None:
        await read_head(reader, seen)
        await send(writer, seen, partial)
        # A stall mid-response, part of the misbehaviour: an asyncio client that has not read
        # the partial response when the RST lands loses it, and no server can see a read (the
        # client's kernel acknowledged the bytes already).
        await asyncio.sleep(0.05)
        if reset:
            close_with_rst(writer)
        writer.transport.abort()
    return handle


def blurt(data: bytes) -> Handler:
    """Send `data` at once, before any request, then close: a server of another protocol."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: Seen) -> None:
        await send(writer, seen, data)
        writer.close()
        await writer.wait_closed()
    return handle


def greet(banner: bytes) -> Handler:
    """Send `banner` at once, as an SMTP or SSH server greets, then wait for the client to
    hang up."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: Seen) -> None:
        await send(writer, seen, banner)
        await until_closed(reader, seen)
    return handle


def silent() -> Handler:
    """Accept, read the request, never answer."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: Seen) -> None:
        await read_head(reader, seen)
        await until_closed(reader, seen)
    return handle


# --- certificates ------------------------------------------------------------------------------

HOSTS = ("127.0.0.1", "localhost")


@dataclass
class Certs:
    """A test CA (trust it with `ca.configure_trust(ctx)`) and server contexts for each case."""

    ca: trustme.CA
    valid: ssl.SSLContext
    expired: ssl.SSLContext
    wrong_host: ssl.SSLContext
    self_signed: ssl.SSLContext
    valid_not_after: datetime.datetime


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """A TLS server context serving `leaf` (a certificate a trustme CA issued)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    return ctx


def _subject_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def self_signed_context(directory: Path, *names: str) -> ssl.SSLContext:
    """A TLS server context with a leaf certificate for `names` (HOSTS unless given) signed by
    its own key, as `openssl req -x509` makes; its files go in `directory`."""
    names = names or HOSTS
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([_subject_name(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "self-signed.pem", directory / "self-signed.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    valid_not_after = now + datetime.timedelta(days=90)
    return Certs(
        ca=ca,
        valid=server_context(ca.issue_cert(*HOSTS, not_after=valid_not_after)),
        expired=server_context(ca.issue_cert(*HOSTS, not_before=now - datetime.timedelta(days=30),
                                             not_after=now - datetime.timedelta(days=1))),
        wrong_host=server_context(ca.issue_cert("other.example")),
        self_signed=self_signed_context(directory),
        valid_not_after=valid_not_after,
    )
