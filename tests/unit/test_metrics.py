"""Each role's registry holds its own metrics only, `vigil up`'s all of them; names and labels
follow Prometheus's conventions; the Grafana dashboard asks for no metric the code lacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine import metrics
from engine.exporter import StreamGauges
from engine.keys import Keys
from engine.metrics import ROLE_METRICS, registry_of
from vigil.roles import ROLES

ROLLUPS = "ClickHouse rollups"
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "vigil.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                            "_created")}
DECLARED = [v for v in vars(metrics).values() if isinstance(v, Counter | Gauge | Histogram)]


def families(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def series(registry: CollectorRegistry) -> set[str]:
    """Every name a scrape of the registry may show (a counter's `_total`, a histogram's
    `_bucket` ...)."""
    return {f.name + suffix for f in registry.collect()
            for suffix in ("", *SUFFIXES.get(f.type, ()))}


PROCESS = families(registry_of([]))
STREAM_GAUGES = {f.name for f in StreamGauges(None, Keys(), [], "").families([])}


def test_every_role_has_its_metrics_and_every_metric_a_role():
    assert set(ROLE_METRICS) == set(ROLES)
    assert {id(c) for cs in ROLE_METRICS.values() for c in cs} == {id(c) for c in DECLARED}


@pytest.mark.parametrize("role", ROLES)
def test_a_role_exports_its_own_metrics_only(role):
    own = {f.name for c in ROLE_METRICS[role] for f in c.collect()}
    assert families(registry_of([role])) == own | PROCESS


def test_the_executor_and_a_sink_apart():
    executor = families(registry_of(["executor"]))
    sink = families(registry_of(["sink-clickhouse"]))
    assert {"vigil_checks_inflight", "vigil_checks_concurrency", "vigil_check_results",
            "vigil_check_latency_seconds"} <= executor
    assert not {"vigil_sink_rows", "vigil_checks_dispatched"} & executor
    assert {"vigil_sink_rows", "vigil_sink_batch_rows", "vigil_sink_batch_seconds"} <= sink
    assert not {"vigil_checks_inflight", "vigil_check_results"} & sink
    assert "process_cpu_seconds" in executor & sink


def test_vigil_up_exports_every_metric_once():
    everything = families(registry_of(ROLES))
    assert {f.name for c in DECLARED for f in c.collect()} <= everything


@pytest.mark.parametrize("metric", DECLARED, ids=lambda m: m._name)
def test_names_and_labels_follow_the_conventions(metric):
    [family] = metric.collect()
    assert family.name.startswith("vigil_")
    if family.type == "histogram":
        assert family.name.endswith(("_seconds", "_rows"))
    assert not {"monitor", "monitor_id", "check_id", "id"} & set(metric._labelnames)
    assert not re.search(r"_(ms|milliseconds|minutes)\b", family.name)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def prometheus_panels(board: dict) -> list[dict]:
    """The panels above the "ClickHouse rollups" row: those below it query ClickHouse."""
    titles = [p["title"] for p in board["panels"]]
    return [p for p in board["panels"][:titles.index(ROLLUPS)] if p["type"] != "row"]


def test_the_dashboard_asks_only_for_metrics_the_code_defines():
    known = series(registry_of(ROLES)) | STREAM_GAUGES
    panels = prometheus_panels(dashboard())
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            names = set(re.findall(r"\b(?:vigil|process)_[a-z_]+", target["expr"]))
            assert names, target["expr"]
            assert names <= known, (panel["title"], names - known)


def test_every_metric_has_a_panel():
    exprs = " ".join(t["expr"] for p in prometheus_panels(dashboard()) for t in p["targets"])
    shown = set(re.findall(r"\bvigil_[a-z_]+", exprs))
    for family in registry_of(ROLES).collect():
        if family.name.startswith("vigil_"):
            assert shown & {family.name + s for s in ("", *SUFFIXES.get(family.type, ()))}, \
                family.name
    assert shown >= STREAM_GAUGES


def test_the_dashboard_imports_with_a_prometheus_input_and_a_rollups_row():
    board = dashboard()
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    [rollups] = [p for p in board["panels"] if p["title"] == ROLLUPS]
    assert rollups["type"] == "row"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
