"""Prometheus metrics, defined once for every role; served by the API at /metrics, or by
`--metrics-port` for a role in its own process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DISPATCHED = Counter("vigil_checks_dispatched_total", "check.due events dispatched")
SKIPPED = Counter("vigil_slots_skipped_total", "missed schedule slots skipped")
RESULTS = Counter("vigil_check_results_total", "check results written", ["outcome"])
CLAIMED = Counter("vigil_entries_claimed_total", "stalled entries claimed", ["stream"])
DEAD_LETTERS = Counter("vigil_dead_letters_total", "entries sent to the dead-letter stream",
                       ["stream"])
INFLIGHT = Gauge("vigil_checks_inflight", "checks running in this process")
SINK_ROWS = Counter("vigil_sink_rows_total", "rows written by a sink", ["sink"])
SINK_BATCH = Histogram("vigil_sink_batch_seconds", "time to write one sink batch", ["sink"])
LAG = Histogram("vigil_result_lag_seconds", "scheduled time to result written",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
EVALUATED = Counter("vigil_results_evaluated_total", "results the evaluator applied")
EVENTS = Counter("vigil_events_total", "evaluation events written", ["type"])
EVALUATION_CONFLICTS = Counter("vigil_evaluation_conflicts_total",
                               "evaluations computed again: another evaluator moved the state")
MONITORS = Gauge("vigil_monitors_scheduled", "monitors in the schedule")
STREAM_LENGTH = Gauge("vigil_stream_length", "entries in a stream", ["stream"])
GROUP_PENDING = Gauge("vigil_group_pending", "entries a group has read and not acknowledged",
                      ["stream", "group"])
GROUP_BEHIND = Gauge("vigil_group_behind_seconds",
                     "age of the oldest entry a group has not read yet (0: none)",
                     ["stream", "group"])


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
