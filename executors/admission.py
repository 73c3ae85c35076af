"""Which delivered check runs next, and when a running one has had its time.

`Ready` holds the checks an executor has read and not started: critical monitors first, then
the order they came in; a check whose target host already has `per_host` checks running waits
aside until one of them ends (so a thousand monitors on one host never open a thousand
connections to it at once), without holding back checks of other hosts. The limit is per
executor process: a shared count in Redis would cost a round trip per check start and end,
and a process that dies would leave its count taken.

`Shedding` says when an executor is behind and which late checks it then expires unrun.

`Timeouts` ends a check that runs past its timeout by cancelling the worker that runs it, from
one ticker for all workers: an asyncio.timeout per check schedules and cancels a loop timer
each time (about 13 us per check here, a tenth of the whole check), the ticker looks at each
worker's deadline every TICK_S. A timeout fires up to TICK_S late; the result shows the time
spent, not the setting.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

TICK_S = 0.01
WINDOW_S = 1.0


class Admitted(Protocol):
    @property
    def critical(self) -> bool: ...

    @property
    def host(self) -> str: ...


T = TypeVar("T", bound=Admitted)


class Ready(Generic[T]):
    def __init__(self, per_host: int | None = None) -> None:
        self.per_host = per_host
        self._critical: deque[T] = deque()
        self._normal: deque[T] = deque()
        self._aside: dict[str, deque[T]] = {}
        self._running: Counter[str] = Counter()
        self._waiting = 0

    def __len__(self) -> int:
        return self._waiting

    def push(self, item: T) -> None:
        (self._critical if item.critical else self._normal).append(item)
        self._waiting += 1

    def pop(self) -> T | None:
        """The next check to start, or None when none may start now."""
        for queue in (self._critical, self._normal):
            while queue:
                item = queue.popleft()
                if self.per_host is not None:
                    if self._running[item.host] >= self.per_host:
                        self._aside.setdefault(item.host, deque()).append(item)
                        continue
                    self._running[item.host] += 1
                self._waiting -= 1
                return item
        return None

    def done(self, item: T) -> None:
        """`item` ended: a check of its host that waited aside goes back to the front."""
        if self.per_host is None:
            return
        self._running[item.host] -= 1
        if not self._running[item.host]:
            del self._running[item.host]
        aside = self._aside.get(item.host)
        if aside:
            back = aside.popleft()
            (self._critical if back.critical else self._normal).appendleft(back)
            if not aside:
                del self._aside[item.host]

    def remove(self, gone: Callable[[T], bool]) -> list[T]:
        """Take out every waiting check that `gone` picks (the executor expires them without
        starting them); the others keep their order."""
        out: list[T] = []
        for queue in (self._critical, self._normal, *self._aside.values()):
            kept: list[T] = []
            for item in queue:
                (out if gone(item) else kept).append(item)
            queue.clear()
            queue.extend(kept)
        self._aside = {host: aside for host, aside in self._aside.items() if aside}
        self._waiting -= len(out)
        return out


@dataclass(slots=True)
class Shedding:
    """Whether an executor is behind on a stream, and which checks it sheds then, as CoDel
    sheds packets.

    Behind: every check it started for a whole WINDOW_S began more than `target_ms` after
    its slot, so the stream holds a backlog it is not working off. While behind, a check
    that would start later than that is `expired` at once, which costs a result and no
    connection, so the executor reaches the fresh end of the stream and runs those checks on
    time instead of running every check late; critical monitors' checks are not shed. The
    first check that starts within `target_ms` ends it. A few late checks among ones on time
    (claimed from a dead peer, a burst after a restart) never make an executor behind."""

    target_ms: int
    behind: bool = False
    _late_since: float | None = None  # time.monotonic() of the first late start in a row

    def started(self, lag_ms: float, now: float) -> None:
        """A check started `lag_ms` after its slot, at time.monotonic() `now`."""
        if lag_ms <= self.target_ms:
            self._late_since, self.behind = None, False
        elif self._late_since is None:
            self._late_since = now
        elif now - self._late_since >= WINDOW_S:
            self.behind = True

    def sheds(self, lag_ms: float, critical: bool) -> bool:
        return self.behind and not critical and lag_ms > self.target_ms


@dataclass(slots=True, eq=False)
class Slot:
    """One worker: the task that runs its checks and when the current one must end."""

    task: asyncio.Task[None] | None = None
    deadline: float = math.inf
    fired: bool = False


@dataclass(slots=True)
class Timeouts:
    slots: list[Slot] = field(default_factory=list)

    def start(self, slot: Slot, timeout_s: float) -> None:
        """Deadlines are time.monotonic(), read once per check (the loop's clock costs a
        lookup of the running loop each time)."""
        slot.deadline = time.monotonic() + timeout_s
        slot.fired = False

    @staticmethod
    def stop(slot: Slot) -> None:
        slot.deadline = math.inf

    def fire(self, now: float) -> int:
        """Cancel every worker past its deadline; how many were."""
        fired = 0
        for slot in self.slots:
            if slot.deadline <= now and slot.task is not None:
                slot.deadline = math.inf
                slot.fired = True
                slot.task.cancel()
                fired += 1
        return fired

    async def run(self, until: asyncio.Event) -> None:
        """Tick until `until` is set (every worker has ended: a drain still needs timeouts)."""
        while not until.is_set():
            await asyncio.sleep(TICK_S)
            self.fire(time.monotonic())


def host_of(spec: dict[str, Any]) -> str:
    """The host a check's spec connects to: its `host`, or its `url`'s."""
    host = spec.get("host")
    if isinstance(host, str):
        return host.lower()
    url = spec.get("url")
    return (urlsplit(url).hostname or "") if isinstance(url, str) else ""
