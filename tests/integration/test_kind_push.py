"""Push monitors: heartbeats through the real aiohttp app into real Redis, tokens from real
Postgres, then the check that judges them."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import push as endpoint
from engine import heartbeats
from engine.clock import redis_ms
from engine.events import CheckDue, Observation
from engine.keys import Keys
from engine.monitors import SpecError
from engine.settings import Settings
from engine.shards import Layout, shard_of
from executors.base import Context
from executors.kinds import SCHEMA, push
from tests.support.helpers import store_monitors, wait_for
from tests.support.kind_executor import check_due, run_checks
from tests.support.servers import api_client

INTERVAL_MS = 3_600_000
GRACE_MS = 600_000


@pytest.fixture
async def token(pool, clean) -> str:
    await store_monitors(pool, SCHEMA.parse([
        {"id": "nightly", "kind": "push", "interval": "1h", "push": {"grace": "10m"}},
        {"id": "web", "kind": "tcp", "interval": "1h", "tcp": {"host": "127.0.0.1", "port": 9}},
    ]), source="file")
    value: str = await pool.fetchval("SELECT push_token FROM monitors WHERE id = 'nightly'")
    return value


def due(scheduled_ms: int | None = None, monitor_id: str = "nightly") -> CheckDue:
    return check_due(monitor_id, "push", {"grace_ms": GRACE_MS}, timeout_ms=10_000,
                     interval_ms=INTERVAL_MS, scheduled_ms=scheduled_ms)


async def judge(r, keys, event: CheckDue | None = None) -> Observation:
    """The push check of `event`; by default one scheduled just after the heartbeats sent."""
    event = event or due(await redis_ms(r) + 1)
    return await push.check(push.PushSpec(grace_ms=GRACE_MS), Context(r, keys), event)


async def stored(r, keys) -> heartbeats.Heartbeat:
    """The last heartbeat recorded for `nightly`."""
    [raw] = await r.zrange(keys.beats("nightly"), -1, -1)
    return heartbeats.Heartbeat.from_json(raw)


async def send(client, token: str, status: str = "up", msg: str | None = None) -> None:
    """One heartbeat through the real endpoint, answered 200."""
    body = {"status": status} if msg is None else {"status": status, "msg": msg}
    assert (await client.post(f"/api/v1/push/{token}", json=body)).status == 200


async def vigil_keys(r) -> list[bytes]:
    return sorted(await r.keys("vigil:*"))


async def test_get_records_an_up_heartbeat(client, token, r, keys):
    before = await redis_ms(r)
    resp = await client.get(f"/api/v1/push/{token}")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "monitor_id": "nightly"}
    beat = await stored(r, keys)
    assert (beat.status, beat.message) == ("up", None)
    assert before <= beat.at_ms <= await redis_ms(r)
    assert await judge(r, keys) == Observation(outcome="up")


async def test_reported_down_through_json_form_query_and_text(client, token, r, keys):
    sent = [
        client.post(f"/api/v1/push/{token}", json={"status": "down", "message": "disk full"}),
        client.post(f"/api/v1/push/{token}", data={"status": "DOWN", "msg": "backup failed"}),
        client.get(f"/api/v1/push/{token}", params={"status": "down", "msg": "exit 3"}),
        client.post(f"/api/v1/push/{token}?status=down", data=b"stderr tail",
                    headers={"Content-Type": "text/plain"}),
    ]
    for request, message in zip(sent, ["disk full", "backup failed", "exit 3", "stderr tail"],
                                strict=True):
        assert (await request).status == 200
        obs = await judge(r, keys)
        assert (obs.outcome, obs.error_kind) == ("down", "reported_down")
        assert obs.error.endswith(message)
    # The next up heartbeat clears it, at the next check (this one's interval held downs).
    assert (await client.post(f"/api/v1/push/{token}", json={"status": "up"})).status == 200
    assert (await judge(r, keys, due(await redis_ms(r) + INTERVAL_MS))).outcome == "up"


async def test_message_is_cut_to_its_cap(client, token, r, keys):
    resp = await client.post(f"/api/v1/push/{token}", json={"status": "down", "msg": "x" * 5000})
    assert resp.status == 200
    assert len((await stored(r, keys)).message) == heartbeats.MESSAGE_MAX


async def test_missing_heartbeat_past_interval_and_grace(client, token, r, keys):
    never = await judge(r, keys)
    assert (never.outcome, never.error_kind) == ("down", "no_heartbeat")
    assert "no heartbeat on record" in never.error

    assert (await client.get(f"/api/v1/push/{token}")).status == 200
    at = (await stored(r, keys)).at_ms
    still = await judge(r, keys, due(at + INTERVAL_MS + GRACE_MS))
    late = await judge(r, keys, due(at + INTERVAL_MS + GRACE_MS + 1))
    assert still.outcome == "up"
    assert (late.outcome, late.error_kind) == ("down", "no_heartbeat")
    assert "last heartbeat 70 min ago" in late.error
    # A heartbeat that came after the check's slot, while it waited, is the next check's.
    for slot in (at - 5_000, at):
        assert (await judge(r, keys, due(slot))).error_kind == "no_heartbeat"


async def test_unknown_token_is_404_and_says_nothing(client, token, r, keys):
    answers = []
    for bad in ("A" * 32, "short", token[:-1] + ("A" if token[-1] != "A" else "B"), "web"):
        resp = await client.post(f"/api/v1/push/{bad}", json={"status": "up"})
        answers.append((resp.status, await resp.json()))
    assert answers == [(404, {"error": "not found"})] * 4
    assert await vigil_keys(r) == []


async def test_bad_fields_are_422_naming_the_field(client, token, r, keys):
    resp = await client.get(f"/api/v1/push/{token}", params={"status": "sideways"})
    assert resp.status == 422
    body = await resp.json()
    assert body["errors"][0]["field"] == "status"
    assert "sideways" in body["errors"][0]["message"]
    resp = await client.post(f"/api/v1/push/{token}", json={"message": {"nested": 1}})
    assert (resp.status, (await resp.json())["errors"][0]["field"]) == (422, "message")
    resp = await client.post(f"/api/v1/push/{token}", data=b"{nope",
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post(f"/api/v1/push/{token}", data=b"x" * (endpoint.BODY_MAX + 1),
                             headers={"Content-Type": "text/plain"})
    assert resp.status == 413
    assert await vigil_keys(r) == []


async def test_push_check_in_the_real_executor(client, token, r, keys):
    # A failed run, then a retry that succeeded: the failure is recorded.
    assert (await client.post(f"/api/v1/push/{token}", json={"status": "down", "msg": "rc=2"})
            ).status == 200
    assert (await client.get(f"/api/v1/push/{token}")).status == 200
    slot = await redis_ms(r) + 1
    got = await run_checks(r, keys, [due(slot), due(slot, monitor_id="silent")],
                           Settings(instance_id="exec-push"))
    assert (got["nightly"].outcome, got["nightly"].error_kind) == ("down", "reported_down")
    assert "up again" in got["nightly"].error
    assert got["nightly"].error.endswith("rc=2")
    assert (got["silent"].error_kind, got["silent"].latency_ms) == ("no_heartbeat", None)


def test_spec_format():
    [plain, tuned] = SCHEMA.parse([
        {"id": "a", "kind": "push", "interval": "1d"},
        {"id": "b", "kind": "push", "interval": "5m", "push": {"grace": "90s"}},
    ])
    assert plain.push.grace_ms == push.DEFAULT_GRACE_MS
    assert tuned.push.grace_ms == 90_000
    assert tuned.push.model_dump() == {"grace_ms": 90_000}
    for bad, why in (({"grace": "soon"}, "not a duration"),
                     ({"grace": "1m", "grace_ms": 60_000}, "not both"),
                     ({"grace_ms": -1}, "greater than or equal to 0")):
        with pytest.raises(SpecError, match=why):
            SCHEMA.parse([{"id": "x", "kind": "push", "interval": "1h", "push": bad}])


def test_heartbeat_record_format():
    raw = heartbeats.Heartbeat.template("down", 'm "\x01"').replace(heartbeats.AT_MARK, b"5")
    assert orjson.loads(raw) == {"at_ms": 5, "status": "down", "message": 'm "\x01"'}
    assert heartbeats.Heartbeat.from_json(raw) == heartbeats.Heartbeat(5, "down", 'm "\x01"')
    with pytest.raises(ValueError, match="malformed"):
        heartbeats.Heartbeat.from_json(b'{"at_ms": "5", "status": "up"}')


async def test_chunked_bodies_are_read_whole_and_capped(client, token, r, keys):
    async def body(parts: list[bytes]) -> AsyncIterator[bytes]:
        for part in parts:
            yield part
            await asyncio.sleep(0.01)  # the sender's pace: each part arrives in a read of its own

    ok = await client.post(f"/api/v1/push/{token}", headers={"Content-Type": "application/json"},
                           data=body([b'{"status": "do', b'wn", "msg": "late"}']))
    assert ok.status == 200
    assert (await stored(r, keys)).message == "late"
    big = await client.post(f"/api/v1/push/{token}", headers={"Content-Type": "text/plain"},
                            data=body([b"x" * 8192] * 3))
    assert big.status == 413


async def test_heartbeats_go_to_the_apps_shard(r, pool, ch, token):
    async with api_client(r, pool, ch, Keys("7")) as c:
        assert (await c.get(f"/api/v1/push/{token}")).status == 200
    assert await vigil_keys(r) == [Keys("7").beats("nightly").encode()]


async def test_a_heartbeat_goes_to_its_monitors_shard(r, pool, ch, token):
    """Of five shards, `nightly` lives in shard 1: where its push check runs."""
    assert shard_of("nightly", 5) == "1"
    async with api_client(r, pool, ch, Layout.of(5, ["0"])) as c:
        assert (await c.get(f"/api/v1/push/{token}")).status == 200
    assert await vigil_keys(r) == [Keys("1").beats("nightly").encode()]


@pytest.mark.parametrize("skew_h", [3, -3])
async def test_the_api_hosts_clock_changes_nothing(client, token, r, keys, monkeypatch, skew_h):
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_h * 3600)
    assert (await client.get(f"/api/v1/push/{token}")).status == 200
    now = await redis_ms(r) + 1
    # Fresh at Redis's now whatever the API host's clock says (a slow one made it 3 h old) ...
    assert (await judge(r, keys, due(now))).outcome == "up"
    # ... and silent once interval + grace have passed (a fast one kept it alive 3 h longer).
    late = await judge(r, keys, due(now + INTERVAL_MS + GRACE_MS + 60_000))
    assert (late.outcome, late.error_kind) == ("down", "no_heartbeat")


async def test_a_down_then_an_up_within_one_interval_is_a_down(client, token, r, keys):
    await send(client, token, "down", "backup failed")
    await send(client, token)
    slot = await redis_ms(r) + 1
    obs = await judge(r, keys, due(slot))
    assert (obs.outcome, obs.error_kind) == ("down", "reported_down")
    assert "up again" in obs.error
    assert obs.error.endswith("backup failed")
    # The next check's interval holds only the recovery: up.
    assert (await judge(r, keys, due(slot + INTERVAL_MS))).outcome == "up"


async def test_a_redelivered_check_judges_what_it_could_see_at_its_slot(client, token, r, keys):
    await send(client, token, "down", "rc=1")
    event = due(await redis_ms(r) + 1)
    first = await judge(r, keys, event)

    async def slot_passed() -> bool:
        return await redis_ms(r) > event.scheduled_ms

    await wait_for(slot_passed)
    # An up that came after the slot belongs to the next check, not to a redelivery of this one.
    await send(client, token)
    again = await judge(r, keys, event)
    assert (first.outcome, first.error_kind) == ("down", "reported_down")
    assert again == first


async def test_a_flood_of_heartbeats_is_bounded(r, keys):
    recorder = heartbeats.Recorder(r, keys)
    key = keys.beats("nightly")
    # A client pinging up as fast as it can: at most one stored per second.
    times = [await recorder.record("nightly", "up", None) for _ in range(3_000)]
    assert await r.zcard(key) <= (times[-1] - times[0]) // 1_000 + 1
    # Failures that each say something else (no two alike, even in one millisecond): the
    # newest MAX_BEATS stay.
    for i in range(heartbeats.MAX_BEATS + 500):
        await recorder.record("nightly", "down", f"run {i}")
    assert await r.zcard(key) == heartbeats.MAX_BEATS
    [newest] = await r.zrange(key, -1, -1)
    assert heartbeats.Heartbeat.from_json(newest).message == f"run {heartbeats.MAX_BEATS + 499}"


async def test_heartbeats_expire_on_their_own(client, token, r, keys):
    await send(client, token)
    assert [await r.pttl(key) > 0 for key in await vigil_keys(r)] == [True]
    # Once a check has said what it needs, a write keeps that long: 3 intervals + grace.
    await judge(r, keys)
    await send(client, token)
    keep = 3 * INTERVAL_MS + GRACE_MS
    ttls = [await r.pttl(key) for key in await vigil_keys(r)]
    assert len(ttls) == 2
    assert all(keep - 60_000 < ttl <= keep for ttl in ttls)


async def test_a_write_trims_what_no_check_can_need(r, keys):
    recorder = heartbeats.Recorder(r, keys)
    key = keys.beats("m")
    # As a check with a 100 ms retention would leave it (3 intervals + grace is >= 3 s).
    await r.set(keys.beats_retention("m"), 100, px=60_000)

    async def past(ms: int) -> bool:
        return await redis_ms(r) > ms + 100

    first = await recorder.record("m", "down", "old")
    await r.pexpire(key, 60_000)  # as the checks in between keep it
    await wait_for(lambda: past(first))
    second = await recorder.record("m", "up", None)
    # The newest beat before the cut stays: a check may still report it as the last one.
    assert await r.zcard(key) == 2
    await r.pexpire(key, 60_000)
    await wait_for(lambda: past(second))
    third = await recorder.record("m", "down", "new")
    kept = [heartbeats.Heartbeat.from_json(raw).at_ms for raw in await r.zrange(key, 0, -1)]
    assert kept == [second, third]
    # With neither a write nor a check for the retention, it is gone.
    assert 0 < await r.pttl(key) <= 100

    async def gone() -> bool:
        return not await r.exists(key)

    await wait_for(gone)


async def test_forget_drops_removed_monitors_heartbeats(client, token, r, keys):
    await send(client, token, "down", "x")
    await judge(r, keys)
    await heartbeats.Recorder(r, keys).record("kept", "up", None)
    await heartbeats.forget(r, keys, ["nightly", "never-pushed"])
    assert await vigil_keys(r) == [keys.beats("kept").encode()]
    await heartbeats.forget(r, keys, [])


TLS = ssl.create_default_context()
beat_lists = st.lists(st.tuples(st.floats(min_value=0, max_value=6, exclude_max=True),
                                st.sampled_from(["up", "down"])), max_size=12)


@given(interval_ms=st.integers(min_value=1_000, max_value=3_600_000),
       grace_frac=st.floats(min_value=0, max_value=2), start_ms=st.integers(0, 2**43),
       beats=beat_lists)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_failure_is_lost_and_no_verdict_changes_later(redis_url, interval_ms, grace_frac,
                                                         start_ms, beats):
    """Checks on the grid start + k * interval (k = 1..6) over heartbeats placed anywhere: a
    check whose interval holds a `down` is down; each verdict is the same whether judged
    after every heartbeat arrived or as soon as its slot passed; a check is up exactly when
    its last heartbeat is fresh and up and its interval holds no `down`."""
    grace_ms = int(interval_ms * grace_frac)
    keys = Keys("push-property")
    slots = [start_ms + k * interval_ms for k in range(1, 7)]
    placed = sorted((start_ms + int(at * interval_ms), i, status)
                    for i, (at, status) in enumerate(beats))

    async def verdicts(arrive_late: bool) -> list[Observation]:
        r = aioredis.Redis.from_url(redis_url)
        # Push checks use no TLS: one context for every example spares loading the CA store.
        ctx = Context(r, keys, tls_verify=TLS, tls_noverify=TLS)
        spec = push.PushSpec(grace_ms=grace_ms)
        try:
            await r.delete(*[keys.beats("p"), keys.beats_retention("p")])
            sent, out = 0, []
            for slot in slots:
                for at, i, status in placed[sent:] if arrive_late else [
                        p for p in placed[sent:] if p[0] < slot]:
                    record = heartbeats.Heartbeat.template(status, f"beat {i}")
                    # The score's fraction keeps the order of two in one millisecond.
                    await r.zadd(keys.beats("p"), {
                        record.replace(heartbeats.AT_MARK, str(at).encode()): at + i / 100})
                    sent += 1
                event = check_due("p", "push", {}, interval_ms=interval_ms, scheduled_ms=slot)
                out.append(await push.check(spec, ctx, event))
            return out
        finally:
            await r.aclose()

    late, on_time = asyncio.run(verdicts(True)), asyncio.run(verdicts(False))
    assert late == on_time
    for slot, obs in zip(slots, on_time, strict=True):
        before = [(at, status) for at, _, status in placed if at < slot]
        failed = any(status == "down" for at, status in before if at >= slot - interval_ms)
        if failed:
            assert (obs.outcome, obs.error_kind) == ("down", "reported_down")
        fresh_up = bool(before) and slot - before[-1][0] <= interval_ms + grace_ms and (
            before[-1][1] == "up")
        assert (obs.outcome == "up") == (fresh_up and not failed)
