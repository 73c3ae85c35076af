"""TCP checks against real sockets on 127.0.0.1: banners, send/expect, resets, refusals,
a silent server, and the real executor end to end."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import yaml

from engine.events import Observation
from engine.monitors import SpecError
from engine.settings import Settings
from executors.base import Context
from executors.kinds import SCHEMA, tcp
from tests.support.helpers import free_port, wait_for
from tests.support.hostile import (
    RawServer,
    Seen,
    blurt,
    close_with_rst,
    greet,
    send,
    silent,
    until_closed,
)
from tests.support.kind_executor import check_due, observe, run_checks

BANNER = b"220 mail.example.test ESMTP ready\r\n"
HOST = "127.0.0.1"


async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
    line = await reader.readline()
    await send(writer, seen, b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR unexpected " + line)
    await until_closed(reader, seen)


async def reset_at_once(_r: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        _seen: Seen) -> None:
    close_with_rst(writer)


async def run(ctx: Context, **spec: Any) -> Observation:
    return await observe(ctx, "tcp", spec, timeout_ms=800)


async def test_banner_matches(ctx):
    async with RawServer(greet(BANNER)) as server:
        obs = await run(ctx, host=HOST, port=server.port, expect="220 ")
        regex = await run(ctx, host=HOST, port=server.port, expect_regex=r"^220 \S+ ESMTP")
    assert (obs.outcome, obs.error) == ("up", None)
    assert set(obs.phases) == {"connect"}
    assert obs.latency_ms >= obs.phases["connect"] > 0
    assert regex.outcome == "up"


async def test_send_then_expect_a_reply(ctx):
    # YAML double quotes turn \r\n into CR LF; the check sends the string as it is.
    spec = yaml.safe_load('send: "PING\\r\\n"\nexpect: "+PONG"')
    assert spec["send"] == "PING\r\n"
    async with RawServer(pong) as server:
        obs = await run(ctx, host=HOST, port=server.port, **spec)
        wrong = await run(ctx, host=HOST, port=server.port, send="PONG\r\n", expect="+PONG")
    assert obs.outcome == "up"
    assert (wrong.outcome, wrong.error_kind) == ("down", "banner")
    assert "-ERR unexpected PONG" in wrong.error


async def test_send_hex_writes_its_bytes_as_they_are(ctx):
    async with RawServer(pong) as server:
        obs = await run(ctx, host=HOST, port=server.port, send_hex=b"PING\r\n".hex(),
                        expect="+PONG")
    assert obs.outcome == "up"


async def test_banner_mismatch_shows_what_came(ctx):
    async with RawServer(greet(BANNER)) as server:
        # The target keeps the connection open: the check stops reading at its own deadline.
        obs = await run(ctx, host=HOST, port=server.port, expect="SSH-2.0")
    assert (obs.outcome, obs.error_kind) == ("down", "banner")
    assert "expected 'SSH-2.0'" in obs.error
    assert "220 mail.example.test ESMTP ready" in obs.error
    assert "nothing more came" in obs.error
    assert set(obs.phases) == {"connect"}


async def test_banner_mismatch_on_close_and_on_the_read_cap(ctx):
    async with RawServer(blurt(b"hello\n")) as server:
        closed = await run(ctx, host=HOST, port=server.port, expect_regex="^OK")
    async with RawServer(blurt(b"x" * (tcp.READ_CAP * 3))) as server:
        capped = await run(ctx, host=HOST, port=server.port, expect="OK")
    assert (closed.error_kind, "closed the connection" in closed.error) == ("banner", True)
    assert "'hello\\n'" in closed.error
    assert capped.error_kind == "banner"
    assert f"{tcp.READ_CAP} bytes without a match" in capped.error
    assert f"first {tcp.SHOWN} of {tcp.READ_CAP} bytes" in capped.error


async def test_reset_by_the_target(ctx):
    async with RawServer(reset_at_once) as server:
        obs = await run(ctx, host=HOST, port=server.port, expect="220")
    assert (obs.outcome, obs.error_kind) == ("down", "reset")
    assert "reset" in obs.error


async def test_refused_and_unresolvable(ctx):
    refused = await run(ctx, host=HOST, port=free_port())
    nodns = await run(ctx, host="no-such-host.invalid", port=25)
    assert (refused.outcome, refused.error_kind) == ("down", "connect")
    assert "refused" in refused.error.lower()
    assert (nodns.outcome, nodns.error_kind) == ("down", "dns")


async def test_connect_only_and_send_only_are_up(ctx):
    async with RawServer(silent()) as server:
        plain = await run(ctx, host=HOST, port=server.port)
        sent = await run(ctx, host=HOST, port=server.port, send="hello\n")
    assert plain.outcome == sent.outcome == "up"


def test_spec_format():
    [monitor] = SCHEMA.parse([{"id": "smtp", "kind": "tcp", "interval": "30s", "tcp": {
        "host": "mail.example.com", "port": 25, "expect": "220 "}}])
    assert monitor.tcp == tcp.TcpSpec(host="mail.example.com", port=25, expect="220 ")
    # Options left out stay out of the stored definition: older tcp monitors compare unchanged.
    assert monitor.tcp.model_dump(mode="json") == {"host": "mail.example.com", "port": 25,
                                                   "expect": "220 "}
    for bad, why in (({"expect": "a", "expect_regex": "b"}, "not both"),
                     ({"expect_regex": "("}, "not a valid regular expression"),
                     ({"port": 0}, "greater than or equal to 1")):
        with pytest.raises(SpecError, match=why):
            SCHEMA.parse([{"id": "x", "kind": "tcp", "interval": "30s",
                             "tcp": {"host": "h", "port": 25, **bad}}])


async def test_silent_server_times_out_in_the_real_executor(r, keys):
    """A server that accepts and never sends; beside it a banner server, both end to end."""
    settings = Settings(max_timeout_ms=1_000, instance_id="exec-tcp")
    async with RawServer(silent()) as quiet, RawServer(greet(BANNER)) as talks:
        dues = [check_due(mid, "tcp", {"host": HOST, "port": server.port, "expect": "220"},
                          timeout_ms=800)
                for mid, server in (("quiet", quiet), ("talks", talks))]
        got = await run_checks(r, keys, dues, settings)
    assert (got["quiet"].outcome, got["quiet"].error_kind) == ("down", "timeout")
    assert got["talks"].outcome == "up"
    assert got["talks"].phases["connect"] > 0
    # The silent server held up nothing: the banner check finished first.
    assert got["talks"].finished_ms < got["quiet"].finished_ms


def accept_queue(listener: socket.socket) -> tuple[int, int]:
    """A listener's (connections waiting to be accepted, backlog): Linux reports them in
    TCP_INFO as tcpi_unacked and tcpi_sacked for a listening socket."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    waiting, backlog = struct.unpack_from("II", info, 24)
    return waiting, backlog


@asynccontextmanager
async def dropping_port() -> AsyncIterator[int]:
    """A port whose SYNs are dropped: a listener that never accepts, its accept queue filled.
    Linux drops SYNs for a full queue instead of refusing them, as a firewall DROP would."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))
        fillers.append(s)

    async def queue_full() -> bool:
        waiting, backlog = accept_queue(listener)
        return waiting > backlog  # the kernel's own test (sk_acceptq_is_full)

    try:
        await wait_for(queue_full, timeout=5, every=0.01)
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_port_that_drops_packets_times_out_and_stalls_nothing(r, keys):
    settings = Settings(max_timeout_ms=1_000, instance_id="exec-drop")
    async with dropping_port() as port, RawServer(greet(BANNER)) as talks:
        dues = [check_due("dropped", "tcp", {"host": HOST, "port": port}, timeout_ms=800),
                check_due("healthy", "tcp", {"host": HOST, "port": talks.port, "expect": "220"},
                          timeout_ms=800)]
        got = await run_checks(r, keys, dues, settings)
    assert (got["dropped"].outcome, got["dropped"].error_kind) == ("down", "timeout")
    assert got["healthy"].outcome == "up"
    # The healthy check finished long before the dropped one gave up.
    assert got["healthy"].finished_ms < got["dropped"].finished_ms


async def test_a_catastrophic_pattern_stalls_no_check(r, keys):
    """`(a+)+$` on a banner of a's ending in something else backtracks for ever on a
    backtracking engine; through the real executor it is a `banner` mismatch and the healthy
    check beside it is up."""
    settings = Settings(max_timeout_ms=1_000, instance_id="exec-tcp-regex")
    async with (RawServer(blurt(b"a" * 4_000 + b"!")) as bait,
                RawServer(greet(BANNER)) as talks):
        dues = [check_due("bait", "tcp", {"host": HOST, "port": bait.port,
                                          "expect_regex": r"(a+)+$"}, timeout_ms=800),
                check_due("healthy", "tcp", {"host": HOST, "port": talks.port,
                                             "expect_regex": r"^220 \S+ ESMTP"},
                          timeout_ms=800)]
        got = await run_checks(r, keys, dues, settings)
    assert (got["bait"].outcome, got["bait"].error_kind) == ("down", "banner")
    assert "closed the connection" in (got["bait"].error or "")
    assert got["healthy"].outcome == "up"
