"""Every Redis key name Vigil uses, built in one place.

`{shard}` is a Redis Cluster hash tag: every key one Lua call or MULTI touches
shares it, so they live in one slot.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "vigil"
EXECUTOR_GROUP = "executors"
CLICKHOUSE_GROUP = "clickhouse"
STATUS_GROUP = "status"
EVALUATOR_GROUP = "evaluator"
RESULT_GROUPS = (CLICKHOUSE_GROUP, STATUS_GROUP, EVALUATOR_GROUP)
# The groups of the events stream (evaluator.service writes it): the notifier, the Postgres
# projections (incidents, confirmed status history) and ClickHouse's status_events.
NOTIFIER_GROUP = "notifier"
PROJECTION_GROUP = "projections"
EVENTS_CLICKHOUSE_GROUP = "clickhouse"
EVENT_GROUPS = (NOTIFIER_GROUP, PROJECTION_GROUP, EVENTS_CLICKHOUSE_GROUP)


@dataclass(frozen=True, slots=True)
class Keys:
    shard: str = "0"

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.shard}}}"

    @property
    def due(self) -> str:
        """ZSET monitor id -> next due time (epoch ms)."""
        return f"{self.base}:due"

    @property
    def plan(self) -> str:
        """HASH monitor id -> compiled plan (see scheduler.plan)."""
        return f"{self.base}:plan"

    @property
    def shapes(self) -> str:
        """HASH shape digest -> the check.due shape plans name (see scheduler.plan), and
        `#digest` -> how many plans name it."""
        return f"{self.base}:shapes"

    @property
    def revisions(self) -> str:
        """HASH monitor id -> the revision its plan was compiled from (Postgres `revision`)."""
        return f"{self.base}:revisions"

    @property
    def tombstones(self) -> str:
        """HASH monitor id -> `revision:removed at ms` of a removed monitor, for an hour."""
        return f"{self.base}:tombstones"

    @property
    def stats(self) -> str:
        """HASH of scheduler counters (dispatched, skipped)."""
        return f"{self.base}:stats"

    @property
    def paused(self) -> str:
        """HASH region (or `*`: every region) -> when dispatch to it was paused (Redis time,
        ms); the dispatch script sends a paused region nothing (engine.queue)."""
        return f"{self.base}:paused"

    @property
    def regions(self) -> str:
        """SET of every region a plan of this shard names: the regions whose checks streams
        the dispatch script declares as its keys (and the operations view lists)."""
        return f"{self.base}:regions"

    @property
    def checks_prefix(self) -> str:
        """The scheduler's Lua appends the region to this to name a checks stream."""
        return f"{self.base}:checks:"

    def checks(self, region: str) -> str:
        """STREAM of check.due events for one region, group "executors"."""
        return f"{self.checks_prefix}{region}"

    @property
    def results(self) -> str:
        """STREAM of check.result events, groups "clickhouse" and "status"."""
        return f"{self.base}:results"

    @property
    def events(self) -> str:
        """STREAM of evaluation events (engine.events.Event), groups EVENT_GROUPS."""
        return f"{self.base}:events"

    @property
    def rules(self) -> str:
        """HASH monitor id -> its evaluation rules (scheduler.plan.compile_rules), written by
        the scheduler's sync in the same step as the plan."""
        return f"{self.base}:rules"

    def evaluation(self, monitor_id: str) -> str:
        """STRING: one monitor's evaluation state (evaluator.state), its revision first."""
        return f"{self.base}:eval:{monitor_id}"

    @property
    def stale(self) -> str:
        """ZSET `monitor id|region` -> when that region's results are stale (ms) if no newer
        one comes; the evaluator's sweep turns what is past due into `unknown`. (Ids and
        regions hold no `|`.)"""
        return f"{self.base}:stale"

    @property
    def retries(self) -> str:
        """ZSET `monitor id|region` -> when an extra check of a failing monitor is due
        (retry_interval); the dispatch script sends it like a slot."""
        return f"{self.base}:retries"

    @property
    def maintenance(self) -> str:
        """HASH monitor id -> `mode:end ms` of the maintenance window it is in now (mode
        `pause` or `mute`), kept by the scheduler (engine.maintenance)."""
        return f"{self.base}:maintenance"

    @property
    def executors(self) -> str:
        """HASH instance id -> {"region", "seen_ms"}: every executor that served this shard,
        with its last heartbeat (Redis time); see engine.registry."""
        return f"{self.base}:executors"

    @property
    def deadletter(self) -> str:
        """STREAM of entries that could not be processed, with the reason."""
        return f"{self.base}:deadletter"

    @property
    def rollups_settle(self) -> str:
        """STRING: the lock of the ClickHouse rollups' settle step (sinks.rollups), a token
        with an expiry; whoever holds it settles this round, the others skip it."""
        return f"{self.base}:rollups-settle"

    @property
    def ceiling(self) -> str:
        """HASH {"units", "at"}: the token bucket of VIGIL_MAX_CHECKS_PER_MINUTE shared by every
        executor (executors.ceiling), kept in the first shard's slot whatever shards an
        executor serves; it expires once full, as a missing bucket reads."""
        return f"{self.base}:ceiling"

    def beats(self, monitor_id: str) -> str:
        """ZSET of one push monitor's heartbeats scored by Redis time in ms (engine.heartbeats).
        Monitor ids hold no `{`, so the shard's tag stays the key's hash tag."""
        return f"{self.base}:beats:{monitor_id}"

    def beats_retention(self, monitor_id: str) -> str:
        """STRING: how long (ms) the push check needs that monitor's heartbeats kept; the
        check sets it, with the same expiry, and the recording script reads it."""
        return f"{self.base}:beats-retention:{monitor_id}"
