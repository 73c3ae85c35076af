"""TCP checks against real sockets on 127.0.0.1: banners, send/expect, resets, refusals,
a silent server, and the real executor end to end."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager

import pytest
import yaml

from engine.events import CheckDue, CheckResult, check_id
from engine.keys import EXECUTOR_GROUP
from engine.monitors import SpecError
from engine.settings import Settings
from engine.streams import ensure_group
from executors.base import Context
from executors.kinds import SCHEMA, tcp
from executors.service import Executor
from tests.support.helpers import free_port, wait_for
from tests.support.kind_executor import check_due, run_checks

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BANNER = b"220 mail.example.test ESMTP ready\r\n"


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    """A server on 127.0.0.1; every handler ends when the client goes away."""
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


async def banner_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(BANNER)
    await writer.drain()
    await reader.read()  # keep the connection open until the client closes it


async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR unexpected " + line)
    await writer.drain()
    await reader.read()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


def due(spec: dict, timeout_ms: int = 800) -> CheckDue:
    now = int(time.time() * 1000)
    return CheckDue(check_id=check_id("t", "default", now), monitor_id="t", region="default",
                    scheduled_ms=now, deadline_ms=now + 10_000, spec_version=1,
                    spec={"kind": "tcp", "interval_ms": 10_000, "timeout_ms": timeout_ms,
                          "tcp": spec})


async def run(r, keys, **spec) -> object:
    parsed = tcp.TcpSpec.model_validate(spec)
    return await tcp.check(parsed, Context(r, keys), due(spec))


async def test_banner_matches(r, keys):
    async with serve(banner_then_wait) as port:
        obs = await run(r, keys, host="127.0.0.1", port=port, expect="220 ")
        regex = await run(r, keys, host="127.0.0.1", port=port, expect_regex=r"^220 \S+ ESMTP")
    assert (obs.outcome, obs.error) == ("up", None)
    assert set(obs.phases) == {"connect"}
    assert obs.latency_ms >= obs.phases["connect"] > 0
    assert regex.outcome == "up"


async def test_send_then_expect_a_reply(r, keys):
    # YAML double quotes turn \r\n into CR LF; the check sends the string as it is.
    spec = yaml.safe_load('send: "PING\\r\\n"\nexpect: "+PONG"')
    assert spec["send"] == "PING\r\n"
    async with serve(pong) as port:
        obs = await run(r, keys, host="127.0.0.1", port=port, **spec)
        wrong = await run(r, keys, host="127.0.0.1", port=port, send="PONG\r\n", expect="+PONG")
    assert obs.outcome == "up"
    assert (wrong.outcome, wrong.error_kind) == ("down", "banner")
    assert "-ERR unexpected PONG" in wrong.error


async def test_banner_mismatch_shows_what_came(r, keys):
    async with serve(banner_then_wait) as port:
        # The target keeps the connection open: the check stops reading at its own deadline.
        obs = await run(r, keys, host="127.0.0.1", port=port, expect="SSH-2.0")
    assert (obs.outcome, obs.error_kind) == ("down", "banner")
    assert "expected 'SSH-2.0'" in obs.error
    assert "220 mail.example.test ESMTP ready" in obs.error
    assert "nothing more came" in obs.error
    assert set(obs.phases) == {"connect"}


async def test_banner_mismatch_on_close_and_on_the_read_cap(r, keys):
    async def hello_bye(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()

    async def chatty(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * (tcp.READ_CAP * 3))
        await writer.drain()

    async with serve(hello_bye) as port:
        closed = await run(r, keys, host="127.0.0.1", port=port, expect_regex="^OK")
    async with serve(chatty) as port:
        capped = await run(r, keys, host="127.0.0.1", port=port, expect="OK")
    assert (closed.error_kind, "closed the connection" in closed.error) == ("banner", True)
    assert "'hello\\n'" in closed.error
    assert capped.error_kind == "banner"
    assert f"{tcp.READ_CAP} bytes without a match" in capped.error
    assert f"first {tcp.SHOWN} of {tcp.READ_CAP} bytes" in capped.error


async def test_reset_by_the_target(r, keys):
    async def reset(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # linger 0: the close is an RST

    async with serve(reset) as port:
        obs = await run(r, keys, host="127.0.0.1", port=port, expect="220")
    assert (obs.outcome, obs.error_kind) == ("down", "reset")
    assert "reset" in obs.error


async def test_refused_and_unresolvable(r, keys):
    refused = await run(r, keys, host="127.0.0.1", port=free_port())
    nodns = await run(r, keys, host="no-such-host.invalid", port=25)
    assert (refused.outcome, refused.error_kind) == ("down", "connect")
    assert "refused" in refused.error.lower()
    assert (nodns.outcome, nodns.error_kind) == ("down", "dns")


async def test_connect_only_and_send_only_are_up(r, keys):
    async with serve(silent) as port:
        plain = await run(r, keys, host="127.0.0.1", port=port)
        sent = await run(r, keys, host="127.0.0.1", port=port, send="hello\n")
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
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    settings = Settings(max_timeout_ms=1_000, instance_id="exec-tcp")
    async with serve(silent) as quiet, serve(banner_then_wait) as talks:
        for mid, port in (("quiet", quiet), ("talks", talks)):
            event = due({"host": "127.0.0.1", "port": port, "expect": "220"})
            event.monitor_id, event.check_id = mid, check_id(mid, "default", event.scheduled_ms)
            await r.xadd(stream, {"e": event.to_json()})
        stop = asyncio.Event()
        task = asyncio.create_task(Executor(r, keys, settings).run(stop))

        async def both() -> bool:
            return await r.xlen(keys.results) >= 2

        try:
            await wait_for(both)
        finally:
            stop.set()
            await task
    got = {res.monitor_id: res for res in
           (CheckResult.from_json(f[b"e"]) for _, f in await r.xrange(keys.results))}
    assert (got["quiet"].outcome, got["quiet"].error_kind) == ("down", "timeout")
    assert got["talks"].outcome == "up"
    assert got["talks"].phases["connect"] > 0


@contextmanager
def dropping_port():
    """A port whose SYNs are dropped: a listener that never accepts, its accept queue filled.
    Linux drops SYNs for a full queue instead of refusing them, as a firewall DROP would."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_port_that_drops_packets_times_out_and_stalls_nothing(r, keys):
    settings = Settings(max_timeout_ms=1_000, instance_id="exec-drop")
    with dropping_port() as port:
        async with serve(banner_then_wait) as talks:
            dues = [check_due("dropped", "tcp", {"host": "127.0.0.1", "port": port},
                              timeout_ms=800),
                    check_due("healthy", "tcp", {"host": "127.0.0.1", "port": talks,
                                                 "expect": "220"}, timeout_ms=800)]
            got = await run_checks(r, keys, dues, settings)
    assert (got["dropped"].outcome, got["dropped"].error_kind) == ("down", "timeout")
    assert got["healthy"].outcome == "up"
    # The healthy check finished long before the dropped one gave up.
    assert got["healthy"].finished_ms < got["dropped"].finished_ms
