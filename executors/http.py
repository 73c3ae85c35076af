"""HTTP(S) checks: method, URL, expected status codes, timeout, body read up to a cap."""

from __future__ import annotations

import ssl
import time
from typing import Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from engine.events import CheckDue, Observation
from executors.base import Context, down

KIND = "http"

BODY_CAP = 64 * 1024


class HttpSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    expected_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    verify_tls: bool = True


def new_session() -> aiohttp.ClientSession:
    """One session per executor; force_close gives every check a fresh connection, as an uptime
    check must (a kept-alive socket would hide connect and TLS failures)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0, ttl_dns_cache=10)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=None))


async def check(spec: HttpSpec, ctx: Context, due: CheckDue) -> Observation:
    session = ctx.http_session
    assert session is not None, "the executor opens the HTTP session at start-up"
    start = time.perf_counter()
    try:
        async with session.request(spec.method, str(spec.url), allow_redirects=False,
                                   ssl=spec.verify_tls) as resp:
            ttfb = (time.perf_counter() - start) * 1000
            # Read the body up to a cap so a huge response costs bounded memory and time.
            await resp.content.read(BODY_CAP)
            latency = (time.perf_counter() - start) * 1000
            if resp.status not in spec.expected_status:
                obs = down("status", f"status {resp.status} not in {spec.expected_status}", latency)
                obs.status_code = resp.status
                return obs
            return Observation(outcome="up", latency_ms=latency, status_code=resp.status,
                               phases={"first_byte": ttfb})
    except aiohttp.ClientConnectorCertificateError as exc:
        return down("tls", str(exc.certificate_error))
    except aiohttp.ClientConnectorDNSError as exc:
        return down("dns", str(exc))
    except aiohttp.ClientConnectorError as exc:
        return down("connect", str(exc.os_error or exc))
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
        return down("protocol", f"{type(exc).__name__}: {exc}")
