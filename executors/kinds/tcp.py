"""TCP checks: connect, optionally send a few bytes, optionally expect a banner or reply.

`send` is one line of text, sent as UTF-8: CR, LF and NUL only as one line ending at its very
end (write `send: "PING\\r\\n"` in double quotes for YAML to turn `\\r\\n` into CR LF), so a
definition cannot smuggle a second command into a line protocol (`SET x 1\\r\\nCONFIG GET
dir`). A payload that is binary, or several lines on purpose, is `send_hex`: its bytes as
hex, sent as they are. Either way the guard keeps a check off Vigil's own servers before it
connects (engine.guard). `expect` is a substring and `expect_regex` a regular expression
(RE2 syntax, searched, not anchored: executors.patterns), compiled once per spec version on
the executor (`prepare`), both matched on what the target sent first, read up to READ_CAP
bytes. The read stops at a match,
at end of stream, at the cap, or at the check's budget (executors.base.budget_s): a target
that sent something else and keeps the connection open (an SMTP server where SSH was
expected) ends as `banner` showing what came, not as a bare `timeout`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pydantic import Field, field_validator, model_validator

from engine.events import CheckDue, Observation
from engine.guard import ConnectError, connect
from engine.resolver import ResolveError
from executors.base import CLOSE_WAIT_S, Context, Host, Kind, Spec, budget_s, down
from executors.patterns import Pattern, Regex

READ_CAP = 4096
SHOWN = 120


class TcpSpec(Spec):

    host: Host
    port: int = Field(ge=1, le=65535)
    send: str | None = Field(default=None, min_length=1, max_length=READ_CAP)
    send_hex: str | None = Field(default=None, min_length=2, max_length=2 * READ_CAP,
                                 pattern=r"^(?:[0-9A-Fa-f]{2})+$")
    expect: str | None = Field(default=None, min_length=1, max_length=READ_CAP)
    expect_regex: Regex | None = None

    @field_validator("send")
    @classmethod
    def _one_line(cls, send: str | None) -> str | None:
        if send is None:
            return send
        line = send[:-2] if send.endswith("\r\n") else send.removesuffix("\n")
        if any(c in line for c in "\r\n\x00"):
            raise ValueError("one line of text: CR, LF and NUL only as its line ending at the "
                             "end; a binary or multi-line payload is send_hex")
        return send

    @model_validator(mode="after")
    def _one_of_each(self) -> TcpSpec:
        if self.expect is not None and self.expect_regex is not None:
            raise ValueError("give `expect` or `expect_regex`, not both")
        if self.send is not None and self.send_hex is not None:
            raise ValueError("give `send` or `send_hex`, not both")
        return self

    @property
    def payload(self) -> bytes | None:
        if self.send_hex is not None:
            return bytes.fromhex(self.send_hex)
        return None if self.send is None else self.send.encode()


@dataclass(frozen=True, slots=True)
class Probe:
    """What a TCP check runs from: the spec and its pattern, compiled once per spec version."""

    spec: TcpSpec = field(compare=False, repr=False)
    pattern: Pattern | None

    @classmethod
    def of(cls, spec: TcpSpec) -> Probe:
        return cls(spec, Pattern.of(spec.expect_regex) if spec.expect_regex else None)

    @property
    def expects(self) -> bool:
        return self.spec.expect is not None or self.pattern is not None

    def matches(self, seen: bytes) -> bool:
        if self.pattern is not None:
            return self.pattern.search(seen.decode(errors="replace"))
        return self.spec.expect is not None and self.spec.expect.encode() in seen

    def wanted(self) -> str:
        return f"/{self.pattern.pattern}/" if self.pattern else f"{self.spec.expect!r}"


def _shown(seen: bytes) -> str:
    text = seen[:SHOWN].decode(errors="replace")
    return repr(text) + (f" (first {SHOWN} of {len(seen)} bytes)" if len(seen) > SHOWN else "")


async def _close(writer: asyncio.StreamWriter) -> None:
    """A FIN for a polite close; a bounded wait, then RST, for a peer that stopped reading."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()


async def _read_until_match(probe: Probe, reader: asyncio.StreamReader,
                            read_s: float) -> tuple[bytes, str]:
    """What came, and why reading stopped: match, eof, cap or deadline."""
    seen = b""
    try:
        async with asyncio.timeout(max(read_s, 0.0)):
            while len(seen) < READ_CAP:
                chunk = await reader.read(READ_CAP - len(seen))
                if not chunk:
                    return seen, "eof"
                seen += chunk
                if probe.matches(seen):
                    return seen, "match"
    except TimeoutError:
        return seen, "deadline"
    return seen, "cap"


def _mismatch(probe: Probe, seen: bytes, why: str, connect_ms: float, read_s: float,
              latency: float) -> Observation:
    if why == "deadline" and not seen:
        obs = down("timeout", f"connected in {connect_ms:.0f} ms, then no data within "
                              f"{max(read_s, 0) * 1000:.0f} ms", latency)
    elif why == "eof" and not seen:
        # A server that accepts and hangs up at once (a full backlog, a wrong service behind
        # a proxy) sent no banner to compare: saying "got ''" would read as a mismatch.
        obs = down("empty_reply", f"expected {probe.wanted()}; the target closed the "
                                  "connection without sending anything", latency)
    else:
        stopped = {"eof": "then the target closed the connection",
                   "cap": f"{READ_CAP} bytes without a match",
                   "deadline": "then nothing more came"}[why]
        obs = down("banner", f"expected {probe.wanted()}, got {_shown(seen)}; {stopped}", latency)
    obs.phases = {"connect": connect_ms}
    return obs


async def check(probe: Probe, ctx: Context, due: CheckDue) -> Observation:
    spec = probe.spec
    start = time.perf_counter()
    try:
        addresses, _ = await ctx.guard.resolve(ctx.resolver, spec.host, spec.port,
                                               budget_s(due))
        reader, writer = await connect(addresses, spec.port, lambda family, ip: (
            asyncio.open_connection(ip, spec.port, family=family)))
    except ResolveError as exc:
        return down(exc.kind, str(exc), (time.perf_counter() - start) * 1000)
    except ConnectError as exc:
        return down("connect", str(exc))
    connect_ms = (time.perf_counter() - start) * 1000
    # The read ends at the check's budget, counted from the start of the check.
    read_s = budget_s(due) - connect_ms / 1000
    seen, why, step = b"", "match", "sending"
    try:
        if spec.payload is not None:
            writer.write(spec.payload)
            await writer.drain()
        step = "reading"
        if probe.expects:
            seen, why = await _read_until_match(probe, reader, read_s)
    except OSError as exc:  # a reset, a broken pipe, the network going away mid-exchange
        reason = ("connection reset by the target" if isinstance(exc, ConnectionResetError)
                  else exc.strerror or str(exc))
        return down("reset", f"{reason} while {step}", (time.perf_counter() - start) * 1000)
    finally:
        await _close(writer)
    latency = (time.perf_counter() - start) * 1000
    if why != "match":
        return _mismatch(probe, seen, why, connect_ms, read_s, latency)
    return Observation(outcome="up", latency_ms=latency, phases={"connect": connect_ms})


KIND = Kind("tcp", TcpSpec, check, prepare=Probe.of)
