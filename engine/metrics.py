"""Prometheus metrics, declared once with no registry: each process builds one registry of
the roles it runs (ROLE_METRICS, `registry_of`), so `vigil executor` exports the executor's
metrics only and `vigil up` all of them; engine.exporter serves it, with the stream gauges.

Labels are bounded sets (outcome, kind, region, sink, channel, transport, stream, group),
never a monitor id: one series per monitor would grow with every monitor added.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.registry import Collector

# Counted by whichever role consumes the stream (engine.streams counts for all of them).
CLAIMED = Counter("vigil_entries_claimed_total", "stalled entries claimed", ["stream"],
                  registry=None)
DEAD_LETTERS = Counter("vigil_dead_letters_total", "entries sent to the dead-letter stream",
                       ["stream"], registry=None)

DISPATCHED = Counter("vigil_checks_dispatched_total", "check.due events dispatched",
                     registry=None)
SKIPPED = Counter("vigil_slots_skipped_total", "missed schedule slots skipped", registry=None)
HELD = Counter("vigil_checks_held_total",
               "checks not dispatched: their region, or all dispatch, paused by an operator",
               registry=None)
MONITORS = Gauge("vigil_monitors_scheduled", "monitors in the schedule", registry=None)

INFLIGHT = Gauge("vigil_checks_inflight", "checks running in this process", registry=None)
CONCURRENCY = Gauge("vigil_checks_concurrency", "checks this process runs at once at most",
                    registry=None)
RESULTS = Counter("vigil_check_results_total", "check results, by check kind, region and outcome",
                  ["kind", "region", "outcome"], registry=None)
LATENCY = Histogram("vigil_check_latency_seconds",
                    "the latency a check measured (results that have one), by check kind",
                    ["kind"], registry=None,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LAG = Histogram("vigil_result_lag_seconds", "scheduled time to result written", registry=None,
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))

EVALUATED = Counter("vigil_results_evaluated_total", "results the evaluator applied",
                    registry=None)
EVENTS = Counter("vigil_events_total", "evaluation events written", ["type"], registry=None)
EVALUATION_CONFLICTS = Counter("vigil_evaluation_conflicts_total",
                               "evaluations computed again: another evaluator moved the state",
                               registry=None)

SINK_ROWS = Counter("vigil_sink_rows_total", "rows written by a sink", ["sink"], registry=None)
SINK_BATCH = Histogram("vigil_sink_batch_seconds", "time to write one sink batch", ["sink"],
                       registry=None)
SINK_BATCH_ROWS = Histogram("vigil_sink_batch_rows", "rows in one batch a sink writes", ["sink"],
                            registry=None,
                            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000))

# Channel ids are an operator's configuration, a bounded set: fine as a label.
DELIVERIES = Counter("vigil_notifier_deliveries_total",
                     "notifications a channel accepted, by channel and transport kind",
                     ["channel", "transport"], registry=None)
DELIVERY_FAILURES = Counter("vigil_notifier_failures_total",
                            "failed notification attempts (each retry counts), by channel and "
                            "transport kind", ["channel", "transport"], registry=None)

_SINK = (SINK_ROWS, SINK_BATCH, SINK_BATCH_ROWS, CLAIMED, DEAD_LETTERS)
# What each role (vigil.roles.ROLES) exports besides the process's own figures.
ROLE_METRICS: dict[str, tuple[Collector, ...]] = {
    "scheduler": (DISPATCHED, SKIPPED, HELD, MONITORS),
    "executor": (INFLIGHT, CONCURRENCY, RESULTS, LATENCY, LAG, CLAIMED, DEAD_LETTERS),
    "evaluator": (EVALUATED, EVENTS, EVALUATION_CONFLICTS, CLAIMED, DEAD_LETTERS),
    "sink-clickhouse": _SINK,
    "sink-status": _SINK,
    "sink-incidents": _SINK,
    "sink-status-events": _SINK,
    "notifier": (DELIVERIES, DELIVERY_FAILURES, DEAD_LETTERS),
    "api": (),
}



def registry_of(roles: Iterable[str]) -> CollectorRegistry:
    """A registry of the metrics of these roles (each once: roles share some) and of the
    process's own figures (CPU, memory, file descriptors, GC)."""
    registry = CollectorRegistry()
    mine = dict.fromkeys(c for role in roles for c in ROLE_METRICS[role])
    for collector in (*mine, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry
