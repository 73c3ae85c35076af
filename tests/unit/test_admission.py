"""executors.admission: the order checks start in, the per-host limit, the timeout ticker."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from executors.admission import WINDOW_S, Ready, Shedding, Slot, Timeouts, host_of


@dataclass(eq=False)
class Item:
    name: str
    host: str = "a"
    critical: bool = False


def popped(ready: Ready[Item]) -> list[str]:
    """Pop until none may start; the names in order."""
    out = []
    while (item := ready.pop()) is not None:
        out.append(item.name)
    return out


def test_critical_checks_start_first_then_arrival_order() -> None:
    ready: Ready[Item] = Ready()
    for item in (Item("n1"), Item("c1", critical=True), Item("n2"), Item("c2", critical=True)):
        ready.push(item)
    assert len(ready) == 4
    assert popped(ready) == ["c1", "c2", "n1", "n2"]
    assert len(ready) == 0


def test_per_host_limit_holds_back_one_host_only() -> None:
    ready: Ready[Item] = Ready(per_host=2)
    items = [Item(f"a{i}", host="a") for i in range(4)] + [Item("b0", host="b")]
    for item in items:
        ready.push(item)
    # Two of host a start; the other two wait aside while b's check goes past them.
    assert popped(ready) == ["a0", "a1", "b0"]
    assert len(ready) == 2
    ready.done(items[4])  # b ending frees nothing for a
    assert ready.pop() is None
    ready.done(items[0])  # a0 ended: the first of a's waiting comes back
    assert popped(ready) == ["a2"]
    ready.done(items[1])
    assert popped(ready) == ["a3"]
    assert len(ready) == 0


def test_a_held_critical_check_goes_back_before_the_rest() -> None:
    ready: Ready[Item] = Ready(per_host=1)
    first = Item("a0", host="a")
    ready.push(first)
    assert ready.pop() is first
    for item in (Item("a1", host="a", critical=True), Item("b0", host="b"),
                 Item("n", host="n")):
        ready.push(item)
    assert popped(ready) == ["b0", "n"]  # a1 waits for a0
    ready.push(Item("m", host="m"))
    ready.done(first)
    assert popped(ready) == ["a1", "m"]


def test_without_a_limit_done_changes_nothing() -> None:
    ready: Ready[Item] = Ready()
    items = [Item(f"a{i}") for i in range(3)]
    for item in items:
        ready.push(item)
    assert popped(ready) == ["a0", "a1", "a2"]
    ready.done(items[0])
    assert ready.pop() is None


def test_remove_takes_out_what_it_picks_wherever_it_waits() -> None:
    ready: Ready[Item] = Ready(per_host=1)
    running = Item("a0", host="a")
    ready.push(running)
    assert ready.pop() is running
    for item in (Item("a1", host="a"), Item("a2", host="a"), Item("b", host="b")):
        ready.push(item)
    assert popped(ready) == ["b"]  # a1 and a2 wait aside for a0
    for item in (Item("c", host="c", critical=True), Item("d", host="d")):
        ready.push(item)
    gone = ready.remove(lambda item: item.name in {"a1", "c"})
    assert sorted(item.name for item in gone) == ["a1", "c"]
    assert len(ready) == 2
    assert popped(ready) == ["d"]
    ready.done(running)
    assert popped(ready) == ["a2"]
    assert len(ready) == 0


def test_removing_all_returns_every_check_not_started() -> None:
    ready: Ready[Item] = Ready(per_host=1)
    for item in (Item("a0"), Item("a1"), Item("a2"), Item("b0", host="b"), Item("b1", host="b")):
        ready.push(item)
    assert popped(ready) == ["a0", "b0"]
    assert sorted(item.name for item in ready.remove(lambda _: True)) == ["a1", "a2", "b1"]
    assert len(ready) == 0
    assert ready.pop() is None


def test_host_of_reads_host_or_url() -> None:
    assert host_of({"host": "DB.Example"}) == "db.example"
    assert host_of({"url": "https://Shop.example:8443/health"}) == "shop.example"
    assert host_of({"url": 5}) == ""
    assert host_of({}) == ""


async def test_timeouts_cancel_only_the_workers_past_their_deadline() -> None:
    late, early = Slot(), Slot()
    for slot in (late, early):
        slot.task = asyncio.create_task(asyncio.Event().wait())
    timeouts = Timeouts([late, early])
    timeouts.start(late, 1)
    timeouts.start(early, 100)
    now = time.monotonic()
    assert timeouts.fire(now) == 0
    assert timeouts.fire(now + 2) == 1
    assert (late.fired, late.deadline, early.fired) == (True, math.inf, False)
    assert timeouts.fire(now + 2) == 0  # fired once
    timeouts.stop(early)
    assert timeouts.fire(now + 200) == 0  # stopped: its check ended in time
    await asyncio.gather(late.task, return_exceptions=True)
    assert late.task.cancelled()
    assert early.task is not None
    assert not early.task.done()
    early.task.cancel()
    await asyncio.gather(early.task, return_exceptions=True)


async def test_timeouts_ticker_runs_until_told_to_stop() -> None:
    slot = Slot()
    slot.task = asyncio.create_task(asyncio.Event().wait())
    timeouts = Timeouts([slot])
    timeouts.start(slot, 0)
    until = asyncio.Event()
    ticker = asyncio.create_task(timeouts.run(until))
    await asyncio.gather(slot.task, return_exceptions=True)  # cancelled by the ticker
    assert slot.fired
    until.set()
    await ticker


def test_shedding_starts_after_a_window_of_late_starts_only() -> None:
    """Behind once every start for WINDOW_S was late; then late checks are shed, critical
    ones and checks within the target are not, and the first start on time ends it."""
    shed = Shedding(target_ms=1_000)
    shed.started(5_000, now=10.0)
    shed.started(5_000, now=10.0 + WINDOW_S / 2)
    assert not shed.behind
    assert not shed.sheds(5_000, critical=False)
    shed.started(5_000, now=10.0 + WINDOW_S)
    assert shed.behind
    assert (shed.sheds(1_001, critical=False), shed.sheds(1_001, critical=True),
            shed.sheds(1_000, critical=False)) == (True, False, False)
    shed.started(20, now=12.0)
    assert not shed.behind
    assert not shed.sheds(5_000, critical=False)


def test_late_starts_among_timely_ones_never_make_an_executor_behind() -> None:
    """Checks claimed from a dead peer, or a burst after a restart, start late among checks
    that start on time: the run of late starts is broken each time."""
    shed = Shedding(target_ms=1_000)
    for tick in range(100):
        shed.started(30_000 if tick % 2 else 5, now=tick * WINDOW_S)
    assert not shed.behind
