"""TLS certificate checks: chain trust, hostname and days to expiry of the certificate that
`host:port` serves for `server_name` (SNI).

A certificate the handshake rejects is fetched again without verification, so the result
can say what is wrong with it ("expired 3 days ago", the names it is valid for, its issuer)
and still carry its expiry. The trust store is the system's, or only `ca_file` when given.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from cryptography import x509
from pydantic import Field

from engine.events import CheckDue, Observation
from engine.guard import ConnectError, connect
from engine.resolver import Address, ResolveError
from executors.base import (
    CLOSE_WAIT_S,
    Context,
    Host,
    Kind,
    Spec,
    budget_s,
    down,
    failed,
)
from executors.certs import (
    CERT_HAS_EXPIRED,
    HOSTNAME_CODES,
    UNTRUSTED_CODES,
    expiring,
    expiry,
    trust,
    verify_kind,
)


class TlsSpec(Spec):

    host: Host
    port: int = Field(default=443, ge=1, le=65535)
    server_name: Host | None = None  # sent in the ClientHello
    warn_days: int = Field(default=14, ge=0, le=3650)
    ca_file: str | None = Field(default=None, min_length=1)


class _Probe(asyncio.Protocol):
    """Ignores what the server sends; tells when the connection is gone."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _connect(addresses: list[Address], port: int) -> tuple[asyncio.Transport, _Probe]:
    """A connection to the first of the checked `addresses` that takes it."""
    loop = asyncio.get_running_loop()
    return await connect(addresses, port, lambda family, ip: loop.create_connection(
        _Probe, ip, port, family=family))


async def _handshake(raw: asyncio.Transport, probe: _Probe, context: ssl.SSLContext,
                     server_name: str, within_s: float) -> tuple[bytes, float]:
    """The server's certificate (DER) once the handshake with `context` succeeds, and when
    it succeeded (perf_counter): closing the connection is no part of the measured time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    tls = await loop.start_tls(raw, probe, context, server_hostname=server_name,
                               ssl_handshake_timeout=max(round(within_s, 3), 0.01),
                               ssl_shutdown_timeout=CLOSE_WAIT_S)
    if tls is None:
        raise ssl.SSLEOFError("the connection closed during the TLS handshake")
    done = time.perf_counter()
    try:
        der = tls.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if der is None:
            raise ssl.SSLError("the server sent no certificate")
        return bytes(der), done
    finally:
        # A polite close_notify, bounded by the check's own deadline: a server that never
        # answers it must neither hold the socket nor turn a good result into a timeout.
        tls.close()
        try:
            async with asyncio.timeout(min(CLOSE_WAIT_S, deadline - loop.time())):
                await asyncio.shield(probe.closed)
        except TimeoutError:
            tls.abort()


async def _fetch_unverified(addresses: list[Address], spec: TlsSpec, ctx: Context,
                            server_name: str, within_s: float) -> x509.Certificate | None:
    """The certificate a failed handshake rejected, or None when it cannot be had in time;
    from the addresses the first connection was checked for, not from the name again."""
    if within_s <= 0:
        return None
    try:
        async with asyncio.timeout(within_s):
            raw, probe = await _connect(addresses, spec.port)
            try:
                der, _ = await _handshake(raw, probe, ctx.tls_noverify, server_name, within_s)
            finally:
                raw.close()
        return x509.load_der_x509_certificate(der)
    except (OSError, TimeoutError, ValueError):
        return None


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [cert.subject.rfc4514_string()]
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def rejected(server_name: str, exc: ssl.SSLCertVerificationError,
             cert: x509.Certificate | None) -> Observation:
    """A handshake that failed verification, told with what the certificate itself says."""
    reason = exc.verify_message or str(exc)
    if cert is None:
        return down(verify_kind(exc), f"certificate for {server_name}: {reason}")
    expiry_ms, left, words = expiry(cert.not_valid_after_utc)
    # OpenSSL reports the chain and the hostname before the dates, so an expired certificate
    # on a misconfigured host would otherwise hide its expiry: the dates come first here.
    if left <= 0:
        obs = down("tls_expired", f"certificate for {server_name} {words}")
    elif exc.verify_code in HOSTNAME_CODES:
        obs = down("tls_hostname", f"certificate is not valid for {server_name}: it names "
                                   f"{', '.join(_names(cert))}; it {words}")
    elif exc.verify_code in UNTRUSTED_CODES:
        obs = down("tls_untrusted", f"certificate for {server_name} is not trusted: {reason} "
                                    f"(issuer {cert.issuer.rfc4514_string()}); it {words}")
    elif exc.verify_code == CERT_HAS_EXPIRED:
        obs = down("tls_expired", f"a certificate in the chain for {server_name} has expired; "
                                  f"the server's own {words}")
    else:
        obs = down("tls", f"certificate for {server_name}: {reason}; it {words}")
    obs.tls_expiry_ms = expiry_ms
    return obs


def judge(spec: TlsSpec, server_name: str, cert: x509.Certificate, connect_ms: float,
          tls_ms: float) -> Observation:
    """A verified certificate: up, or degraded when fewer than warn_days are left."""
    obs = Observation(outcome="up", latency_ms=connect_ms + tls_ms,
                      tls_expiry_ms=expiry(cert.not_valid_after_utc)[0],
                      phases={"connect": connect_ms, "tls": tls_ms})
    warning = expiring(server_name, cert.not_valid_after_utc, spec.warn_days, "warn_days")
    if warning is not None:
        obs.outcome, obs.error_kind, obs.error = "degraded", "tls_expiring", warning
    return obs


async def check(spec: TlsSpec, ctx: Context, due: CheckDue) -> Observation:
    try:
        context = ctx.tls_verify if spec.ca_file is None else trust(spec.ca_file)
    except (OSError, ssl.SSLError) as exc:
        return failed("spec", f"ca_file {spec.ca_file}: {exc}")
    server_name = spec.server_name or spec.host
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s(due)
    start = time.perf_counter()
    try:
        addresses, _ = await ctx.guard.resolve(ctx.resolver, spec.host, spec.port,
                                               deadline - loop.time())
        raw, probe = await _connect(addresses, spec.port)
    except ResolveError as exc:
        return down(exc.kind, str(exc), _ms_since(start))
    except ConnectError as exc:
        return down("connect", str(exc), _ms_since(start))
    connected = time.perf_counter()
    try:
        der, done = await _handshake(raw, probe, context, server_name, deadline - loop.time())
    except ssl.SSLCertVerificationError as exc:
        # Measured before the second, unverified handshake that only explains the failure.
        latency = _ms_since(start)
        raw.close()
        cert = await _fetch_unverified(addresses, spec, ctx, server_name,
                                       deadline - loop.time())
        obs = rejected(server_name, exc, cert)
        obs.latency_ms = latency
        return obs
    except ConnectionResetError:  # an RST as the connection opens: not TLS's doing
        return down("reset", f"{spec.host}:{spec.port}: connection reset during the TLS "
                             "handshake", _ms_since(start))
    except (ssl.SSLError, OSError) as exc:
        return down("tls", f"{spec.host}:{spec.port} ({server_name}): TLS handshake failed: "
                           f"{exc}", _ms_since(start))
    finally:
        raw.close()
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return down("tls", f"{server_name}: the server's certificate does not parse: {exc}",
                    (done - start) * 1000)
    return judge(spec, server_name, cert, (connected - start) * 1000, (done - connected) * 1000)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000

KIND = Kind("tls", TlsSpec, check)
