"""DNS checks: resolve a name for one record type, optionally at a given nameserver, and
require that every expected value is in the answer.

Matching is on normalized values, so `expect` can be written the way people write records:
addresses are compared as addresses (`::1` equals `0::1`), names without case or trailing
dot, MX as `"10 mail.example.com"` (preference and host) or `"mail.example.com"` (host
only), TXT exactly, its character-strings joined as SPF and DKIM readers join them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.mxbase import MXBase
from dns.rdtypes.nsbase import NSBase
from dns.rdtypes.txtbase import TXTBase
from pydantic import Field, IPvAnyAddress, ValidationInfo, field_validator

from engine.events import CheckDue, Observation
from executors.base import Context, Kind, Spec, budget_s, down

RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS"]


class DnsSpec(Spec):

    name: str = Field(min_length=1, max_length=253)
    record_type: RecordType = "A"
    nameserver: IPvAnyAddress | None = None
    port: int = Field(default=53, ge=1, le=65535)
    expect: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        try:
            dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{name!r} is not a valid DNS name: {exc}") from None
        return name

    @field_validator("record_type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("expect")
    @classmethod
    def _valid_expect(cls, expect: list[str], info: ValidationInfo) -> list[str]:
        rtype = info.data.get("record_type")
        if rtype is None:
            return expect  # record_type reports its own error
        for value in expect:
            expected_value(rtype, value)  # raises ValueError naming the bad value
        return expect


def expected_value(rtype: str, value: str) -> str:
    """An `expect` entry in the normalized form that `answer_values` produces."""
    text = value.strip()
    if rtype in ("A", "AAAA"):
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if (rtype == "A") != (addr.version == 4):
            raise ValueError(f"{value!r} is not an IPv{4 if rtype == 'A' else 6} address")
        return str(addr)
    if rtype == "TXT":
        # `"v=spf1 -all"` as dig prints it means the same as the bare text.
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    if rtype == "MX" and " " in text:
        prio, _, host = text.partition(" ")
        if not prio.isdigit():
            raise ValueError(f"{value!r} is not an MX value like '10 mail.example.com'")
        return f"{int(prio)} {_host(host)}"
    return _host(text)


def _host(name: str) -> str:
    return name.strip().rstrip(".").lower()


def answer_values(rdata: dns.rdata.Rdata) -> list[str]:
    """Every form an `expect` entry may take for one record (MX: with and without priority)."""
    if isinstance(rdata, A | AAAA):
        return [str(ipaddress.ip_address(rdata.address))]
    if isinstance(rdata, TXTBase):
        return [b"".join(rdata.strings).decode(errors="replace")]
    if isinstance(rdata, MXBase):
        host = _host(rdata.exchange.to_text())
        return [f"{rdata.preference} {host}", host]
    if isinstance(rdata, NSBase):  # CNAME and NS
        return [_host(rdata.target.to_text())]
    return [rdata.to_text()]


def _resolver(spec: DnsSpec) -> dns.asyncresolver.Resolver:
    if spec.nameserver is None:
        # The system's resolv.conf, read once per process by dnspython.
        return dns.asyncresolver.get_default_resolver()
    # configure=False: a given nameserver is the only one asked, whatever resolv.conf says.
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(str(spec.nameserver), spec.port)]
    return resolver


async def check(spec: DnsSpec, ctx: Context, due: CheckDue) -> Observation:
    lifetime = budget_s(due)
    ns = spec.nameserver
    if ns is not None:
        # A monitor's nameserver is a target like any other. The system's (resolv.conf) are
        # the operator's choice: on a cloud VM they often are link-local (169.254.169.253).
        ctx.guard.check(str(ns), spec.port)
    where = "" if ns is None else f" at [{ns}]:{spec.port}" if ns.version == 6 else \
        f" at {ns}:{spec.port}"
    query = f"{spec.name} {spec.record_type}{where}"
    start = time.perf_counter()
    try:
        # dnspython's backoff between retries can overrun its lifetime by a few hundred ms:
        # the asyncio deadline is what holds the check inside the monitor's timeout.
        async with asyncio.timeout(lifetime):
            answer = await _resolver(spec).resolve(spec.name, spec.record_type,
                                                   lifetime=lifetime, search=False)
    except dns.resolver.NXDOMAIN:
        return down("nxdomain", f"{query}: no such domain (NXDOMAIN)", _since(start))
    except dns.resolver.NoAnswer:
        return down("no_answer", f"{query}: the name exists but has no {spec.record_type} "
                                 "records", _since(start))
    except dns.resolver.NoNameservers as exc:
        if _all_servfail(exc):
            return down("servfail", f"{query}: the server failed to answer (SERVFAIL)",
                        _since(start))
        return down("dns", f"{query}: {exc}", _since(start))
    except (dns.exception.Timeout, TimeoutError):
        return down("dns_timeout", f"{query}: no answer within {lifetime * 1000:.0f} ms",
                    _since(start))
    except dns.exception.DNSException as exc:
        return down("dns", f"{query}: {exc}", _since(start))
    latency = _since(start)
    got = [answer_values(rdata) for rdata in answer]
    present = {form for forms in got for form in forms}
    missing = [v for v in spec.expect if expected_value(spec.record_type, v) not in present]
    if missing:
        came = ", ".join(sorted(forms[0] for forms in got))
        obs = down("mismatch", f"{query}: missing {', '.join(missing)}; expected "
                               f"{', '.join(spec.expect)}; got {came}", latency)
        obs.phases = {"dns": latency}
        return obs
    return Observation(outcome="up", latency_ms=latency, phases={"dns": latency})


def _all_servfail(exc: dns.resolver.NoNameservers) -> bool:
    """Every nameserver asked answered SERVFAIL: the zone's servers are broken (a lame
    delegation, failed DNSSEC validation), which says more than a generic `dns` failure."""
    errors = exc.kwargs.get("errors") or []
    # dnspython records (nameserver, tcp, port, rcode text or exception, response) per try.
    return bool(errors) and all(error[3] == "SERVFAIL" for error in errors)


def _since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


KIND = Kind("dns", DnsSpec, check)
