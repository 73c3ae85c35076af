"""The stream layer on a real redis-server: a consumer's backlog after a restart under the
same name is read once, and every delivery carries its real delivery count."""

from __future__ import annotations

from structlog.testing import capture_logs

from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP, RESULT_GROUPS, STATUS_GROUP
from engine.streams import (
    EVENT_FIELD,
    Consumer,
    Upkeep,
    ensure_group,
    forget_idle_consumers,
    safe_trim,
)

STREAM, GROUP = "vigil:{t}:streams-test", "g"


async def fill(r, count: int) -> list[bytes]:
    await r.delete(STREAM)
    await ensure_group(r, STREAM, GROUP)
    return [await r.xadd(STREAM, {EVENT_FIELD: str(i)}) for i in range(count)]


async def test_a_restart_under_the_same_name_reads_its_backlog_once(r):
    ids = await fill(r, 5)
    first = Consumer(r, STREAM, GROUP, "stable-name")
    held = await first.read(3, None)
    assert [d.entry_id for d in held] == ids[:3]
    # The process dies holding them; its successor has the same name.
    again = Consumer(r, STREAM, GROUP, "stable-name")
    backlog = await again.read(2, None)
    backlog += await again.read(10, None)
    assert [d.entry_id for d in backlog] == ids[:3]
    assert [d.deliveries for d in backlog] == [2, 2, 2]
    # Still unacknowledged, the backlog is not handed out again: new entries come next.
    assert [d.entry_id for d in await again.read(10, None)] == ids[3:]
    assert await again.read(10, None) == []


async def test_new_entries_have_one_delivery(r):
    ids = await fill(r, 2)
    got = await Consumer(r, STREAM, GROUP, "fresh").read(10, None)
    assert [(d.entry_id, d.deliveries) for d in got] == [(ids[0], 1), (ids[1], 1)]


async def test_a_claim_carries_the_real_delivery_count(r):
    """The claimer's own fresh entries sit between the stalled ones in the id range; they must
    not crowd the stalled entries' counts out."""
    ids = await fill(r, 100)
    claimer = Consumer(r, STREAM, GROUP, "claimer")
    await r.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=100)
    stalled = [ids[0], ids[99]]
    await r.xclaim(STREAM, GROUP, "dead", 0, stalled, idle=60_000, retrycount=6)
    await r.xclaim(STREAM, GROUP, "claimer", 0, ids[1:99])  # fresh, held by the claimer
    claimed = await claimer.claim(30_000, count=10)
    assert {d.entry_id: d.deliveries for d in claimed} == {ids[0]: 7, ids[99]: 7}


async def test_a_claim_spares_live_consumers_however_long_their_entries_are_idle(r):
    """A live peer's entries idle past the claim time (its results waiting for Redis after an
    outage) stay its own; the dead consumer's behind them in id order are claimed."""
    ids = await fill(r, 30)
    await r.xreadgroup(GROUP, "live", {STREAM: ">"}, count=25)
    await r.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=5)
    await r.xclaim(STREAM, GROUP, "live", 0, ids[:25], idle=60_000, justid=True)
    await r.xclaim(STREAM, GROUP, "dead", 0, ids[25:], idle=60_000, justid=True)
    claimer = Consumer(r, STREAM, GROUP, "claimer")
    claimed = await claimer.claim(30_000, count=3, spare=frozenset({"live"}))
    assert [d.entry_id for d in claimed] == ids[25:28]
    owners = {p["message_id"]: p["consumer"] for p in
              await r.xpending_range(STREAM, GROUP, min="-", max="+", count=100)}
    assert {owners[i] for i in ids[:25]} == {b"live"}
    assert {owners[i] for i in ids[25:28]} == {b"claimer"}
    assert {owners[i] for i in ids[28:]} == {b"dead"}


async def test_a_claimed_entry_that_was_trimmed_is_acknowledged(r):
    ids = await fill(r, 2)
    await r.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=2)
    await r.xdel(STREAM, ids[0])
    claimed = await Consumer(r, STREAM, GROUP, "claimer").claim(0)
    assert [d.entry_id for d in claimed] == [ids[1]]
    assert (await r.xpending(STREAM, GROUP))["pending"] == 1


async def test_a_claim_recreates_a_lost_group(r):
    await fill(r, 0)
    await r.flushall()
    assert await Consumer(r, STREAM, GROUP, "claimer").claim(0) == []
    assert [g["name"] for g in await r.xinfo_groups(STREAM)] == [GROUP.encode()]


async def test_consumers_that_are_gone_are_forgotten(r):
    ids = await fill(r, 2)
    for name in ("restart-1", "restart-2", "holder"):
        await r.xgroup_createconsumer(STREAM, GROUP, name)
    await r.xreadgroup(GROUP, "holder", {STREAM: ">"}, count=1)
    await r.xclaim(STREAM, GROUP, "holder", 0, [ids[0]], idle=60_000)
    await r.xreadgroup(GROUP, "live", {STREAM: ">"}, count=1)  # holds ids[1]
    # Everyone is idle past a bound of -1 ms: the ones holding nothing go, the others stay.
    assert await forget_idle_consumers(r, STREAM, GROUP, idle_ms=-1) == 2
    names = {c["name"] for c in await r.xinfo_consumers(STREAM, GROUP)}
    assert names == {b"holder", b"live"}
    assert await forget_idle_consumers(r, "vigil:{t}:no-such-stream", GROUP) == 0


async def test_a_consumer_recreates_its_lost_group(r, keys):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    consumer = Consumer(r, stream, EXECUTOR_GROUP, "exec-1")
    assert await consumer.read(10, None) == []
    await r.flushall()
    assert await consumer.read(10, None) == []  # NOGROUP: made again, nothing to read yet
    entry = await r.xadd(stream, {EVENT_FIELD: b"x"})
    assert [d.entry_id for d in await consumer.read(10, None)] == [entry]


async def test_no_trim_while_a_group_is_missing(r, keys):
    for i in range(2_000):
        await r.xadd(keys.results, {EVENT_FIELD: str(i)})
    await ensure_group(r, keys.results, CLICKHOUSE_GROUP)
    read = await r.xreadgroup(CLICKHOUSE_GROUP, "a", {keys.results: ">"})
    await r.xack(keys.results, CLICKHOUSE_GROUP, *[eid for eid, _ in read[0][1]])
    # The status group is gone (lost with Redis's data, not made again yet).
    assert await safe_trim(r, keys.results, RESULT_GROUPS) == 0
    assert await r.xlen(keys.results) == 2_000
    await ensure_group(r, keys.results, STATUS_GROUP)
    assert await safe_trim(r, keys.results, RESULT_GROUPS) == 0  # it has read nothing yet


async def test_upkeep_tells_how_far_behind_each_group_is(r):
    await fill(r, 0)
    await ensure_group(r, STREAM, "slow")
    seconds, _ = await r.time()
    old = f"{(seconds - 120) * 1000}-0"  # an entry written two minutes ago (ids are Redis time)
    await r.xadd(STREAM, {EVENT_FIELD: b"old"}, id=old)
    await r.xadd(STREAM, {EVENT_FIELD: b"new"})
    await r.xreadgroup(GROUP, "reader", {STREAM: ">"})  # g has read both, "slow" nothing
    upkeep = Upkeep(r, STREAM, GROUP, (GROUP, "slow"), (3_600_000, 1_000))
    with capture_logs() as logs:
        behind = await upkeep.measure()
        await upkeep.measure()  # still behind: no second warning
    assert behind[GROUP] == 0
    assert behind["slow"] >= 120
    assert [e["event"] for e in logs] == ["consumer group falling behind"]


async def test_the_retention_holds_whatever_a_group_has_read(r):
    await fill(r, 0)
    seconds, _ = await r.time()
    for i in range(5):  # written ten minutes ago, read by nobody
        await r.xadd(STREAM, {EVENT_FIELD: b"old"}, id=f"{(seconds - 600) * 1000}-{i + 1}")
    for _ in range(30):
        await r.xadd(STREAM, {EVENT_FIELD: b"new"})
    with capture_logs() as logs:
        assert await Upkeep(r, STREAM, GROUP, (GROUP,), (300_000, 1_000)).retain() == 5
        assert await Upkeep(r, STREAM, GROUP, (GROUP,), (300_000, 20)).retain() == 10
    assert await r.xlen(STREAM) == 20
    assert [e["event"] for e in logs] == [
        "stream trimmed to its retention; a group behind lost entries"] * 2
