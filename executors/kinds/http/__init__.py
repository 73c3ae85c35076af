"""HTTP(S) checks: one request on a fresh connection, a redirect chain if asked, assertions.

Why a lean client instead of aiohttp's: measured on this kind of machine, 50 concurrent GETs
with a fresh connection each, aiohttp's client with force_close does ~1,800 req/s at ~560 us
CPU per request; an asyncio Protocol + httptools (llhttp) on uvloop ~8,000 req/s at ~124 us.
An uptime check opens a fresh connection every time (a kept-alive socket would hide connect
and TLS failures), so that cost is the executor's hot path; the target is >= 4,000 HTTP
checks/s per executor process. Re-measured with this kind (20,000 checks at concurrency
50 against a local uvloop responder, same run): ~15,000 checks/s at ~60 us CPU per check,
against ~6,800/s at ~150 us for aiohttp force_close. The client is executors/httpclient.py;
this package holds the spec (spec.py), what a check runs from, built once per spec version on
the executor (plan.py), the redirect chain (chain.py) and the assertions (assertions.py).

Outcomes: `down` with error_kind dns, dns_timeout (no answer from the resolver within the
check's budget, executors.base.budget_s), connect, tls_untrusted, tls_expired, tls_hostname
(as the tls kind tells a rejected certificate: executors.certs), tls (any other TLS failure),
protocol, reset (an RST before the response completed, or a FIN after part of it),
empty_reply (closed with no byte of a response), redirects, status, header, keyword, regex or
json (the first failed assertion, in that order), body_too_large (body_over_cap: fail);
`degraded` with error_kind "tls_expiring" when everything passed but a certificate expires
within cert_warn_days, else "latency" when it took longer than degraded_ms; `up` otherwise.
A ca_file the executor cannot read is an `error` `spec`; the executor's own timeout gives
"timeout"; a URL or a redirect the guard denies, an `error` `denied` (engine.guard).
Phases are the time spent in each of dns, connect, tls (https) and first_byte (request written
to first response byte), summed over redirect hops; latency_ms is the whole check. The body is
read up to max_body_bytes; a longer body is cut there, which is a failure only with
body_over_cap: fail.
"""

from __future__ import annotations

import ssl
import time

from engine.events import CheckDue, Observation
from executors.base import Context, Kind, budget_s, down, failed
from executors.certs import trust
from executors.httpclient import FetchError, Timings
from executors.kinds.http.assertions import verdict
from executors.kinds.http.chain import exchange
from executors.kinds.http.plan import Plan
from executors.kinds.http.spec import HttpSpec


def _tls(spec: HttpSpec, ctx: Context) -> ssl.SSLContext:
    if not spec.verify_tls:
        return ctx.tls_noverify
    return ctx.tls_verify if spec.ca_file is None else trust(spec.ca_file)


async def check(plan: Plan, ctx: Context, due: CheckDue) -> Observation:
    try:
        tls = _tls(plan.spec, ctx)
    except (OSError, ssl.SSLError) as exc:  # the monitor's file on this executor, not the target
        return failed("spec", f"ca_file {plan.spec.ca_file}: {exc}")
    timings = Timings()
    start = time.perf_counter()
    try:
        response, expiry = await exchange(plan.spec, plan.first, ctx, tls, timings,
                                          budget_s(due))
    except FetchError as exc:
        obs = down(exc.kind, exc.message, (time.perf_counter() - start) * 1000)
        obs.status_code = exc.status
    else:
        obs = verdict(plan, response, (time.perf_counter() - start) * 1000, expiry)
    obs.phases = timings.phases
    return obs


KIND = Kind("http", HttpSpec, check, prepare=Plan.of)
