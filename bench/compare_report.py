"""bench/compare.py's output: one line per run, the table of medians and ratios over the
pairs, and the sweep's summary (the highest on-time rate per system)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from compare_scoring import BULLMQ, LATE_MS, VIGIL, on_time


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _f(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"


def run_line(res: dict[str, Any]) -> str:
    c, cpu, mem = res["checks"], res["cpu"], res["redis_memory"]
    lag, pick, chk, wr = c["lag_ms"], c["pickup_ms"], c["check_lag_ms"], c["write_ms"]
    events = res.get("events_delivery_ms")
    delivery = (f" (events delivery p50/p99 {_ms(events['p50'])}/{_ms(events['p99'])})"
                if events else "")
    return (f"{res['system']:<7} offered {c['offered_per_s']:>8,.1f}/s  done "
            f"{c['completed_per_s']:>8,.1f}/s  lag p50/p99/max {_ms(lag['p50'])}/"
            f"{_ms(lag['p99'])}/{_ms(lag['max'])} ms (start p50/p99 {_ms(pick['p50'])}/"
            f"{_ms(pick['p99'])}, check end {_ms(chk['p50'])}/{_ms(chk['p99'])}, write "
            f"min/p50/p99 {_ms(wr['min'])}/{_ms(wr['p50'])}/{_ms(wr['p99'])}){delivery}  "
            f"missed {c['missed']:,}  late "
            f"{c['late']:,}  dup {c['duplicates']}  off-grid {c['off_grid']}  CPU s/1k "
            f"{cpu['system_cpu_s_per_1k']:.3f} (core {cpu['core_cpu_s_per_1k']:.3f})  redis "
            f"{cpu['redis_cpu_s_per_1k']:.3f}  target {cpu['processes']['target']['cores']:.2f} "
            f"cores  collector complete {res['collector']['complete']}  "
            f"used_memory +{mem['peak_over_base_mib']:.1f} MiB  RSS {cpu['peak_rss_mib']:.0f} "
            f"MiB  {'ON TIME' if on_time(res) else 'NOT ON TIME'}")


def limits_line(lim: dict[str, Any]) -> str:
    return (f"limits: redis-benchmark XADD -P 64 {_f(lim['redis_xadd_P64_per_s'])}/s, "
            f"-P 1 {_f(lim['redis_xadd_P1_per_s'])}/s; aiohttp fresh connection "
            f"{_f(lim['aiohttp'].get('per_s'))} req/s ({lim['aiohttp'].get('cpu_us')} us "
            f"CPU/req); asyncio Protocol + httptools {_f(lim['protocol'].get('per_s'))} req/s "
            f"({lim['protocol'].get('cpu_us')} us); node http.get agent:false "
            f"{_f(lim['node_http'].get('per_s'))} req/s ({lim['node_http'].get('cpu_us')} us "
            f"CPU/req)")


METRICS = [  # (label, getter)
    ("completed checks/s", lambda r: r["checks"]["completed_per_s"]),
    ("lag p50 ms", lambda r: r["checks"]["lag_ms"]["p50"]),
    ("lag p99 ms", lambda r: r["checks"]["lag_ms"]["p99"]),
    ("start lag p50 ms (started - scheduled)", lambda r: r["checks"]["pickup_ms"]["p50"]),
    ("check-end lag p50 ms", lambda r: r["checks"]["check_lag_ms"]["p50"]),
    ("check-end lag p99 ms", lambda r: r["checks"]["check_lag_ms"]["p99"]),
    ("result write p50 ms (finished - checked)", lambda r: r["checks"]["write_ms"]["p50"]),
    ("missed", lambda r: r["checks"]["missed"]),
    ("late (> 1 s)", lambda r: r["checks"]["late"]),
    ("CPU s / 1k checks, system", lambda r: r["cpu"]["system_cpu_s_per_1k"]),
    ("CPU s / 1k checks, core", lambda r: r["cpu"]["core_cpu_s_per_1k"]),
    ("redis-server CPU s / 1k checks", lambda r: r["cpu"]["redis_cpu_s_per_1k"]),
    ("Redis used_memory peak over base MiB", lambda r: r["redis_memory"]["peak_over_base_mib"]),
    ("peak RSS MiB (sum)", lambda r: r["cpu"]["peak_rss_mib"]),
]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _median(values: list[float | None]) -> float | None:
    known = [x for x in values if x is not None]
    return statistics.median(known) if known else None


def pair_table(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for label, get in METRICS:
        v = [get(a) for a, _ in pairs]
        b = [get(p) for _, p in pairs]
        ratios = [ratio(x, y) for x, y in zip(v, b, strict=True)]
        table[label] = {"vigil": v, "bullmq": b, "ratios": ratios, "vigil_median": _median(v),
                        "bullmq_median": _median(b), "ratio_median": _median(ratios)}
    return table


def print_table(table: dict[str, Any]) -> None:
    print(f"{'figure':<40}{'Vigil med':>11}{'BullMQ med':>12}{'ratio med':>11}  per pair")
    for label, row in table.items():
        per = " ".join("-" if x is None else f"{x:.2f}" for x in row["ratios"])
        rm = row["ratio_median"]
        print(f"{label:<40}{_f(row['vigil_median']):>11}{_f(row['bullmq_median']):>12}"
              f"{'-' if rm is None else f'{rm:.2f}':>11}  {per}")


def busiest(res: dict[str, Any]) -> dict[str, float]:
    """Cores used per process in the window, busiest first (where a system saturates)."""
    procs = res["cpu"]["processes"]
    return {k: round(v["cores"], 2)
            for k, v in sorted(procs.items(), key=lambda kv: -kv[1]["cores"])}


def sweep_summary(steps: list[tuple[float, dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    best: dict[str, float | None] = {}
    for i, system in enumerate((VIGIL, BULLMQ)):
        ok = [rate for rate, *runs in steps if on_time(runs[i])]
        best[system] = max(ok) if ok else None
    return {"criteria": f"p99 lag < {LATE_MS} ms and no missed slot", "best_rate_per_s": best,
            "steps": [{"offered_per_s": rate,
                       **{res["system"]: {"completed_per_s": res["checks"]["completed_per_s"],
                                          "lag_ms": res["checks"]["lag_ms"],
                                          "missed": res["checks"]["missed"],
                                          "on_time": on_time(res),
                                          "system_cores": res["cpu"]["system_cores"],
                                          "cores": busiest(res)}
                          for res in runs}}
                      for rate, *runs in steps]}


def print_sweep(summary: dict[str, Any]) -> None:
    for step in summary["steps"]:
        print(f"  {step['offered_per_s']:>7,.0f}/s " + "  ".join(
            f"{system}: {'ON TIME' if step[system]['on_time'] else 'NOT ON TIME'} p50/p99 "
            f"{_ms(step[system]['lag_ms']['p50'])}/{_ms(step[system]['lag_ms']['p99'])} ms "
            f"missed {step[system]['missed']}, cores "
            + " ".join(f"{k} {v}" for k, v in list(step[system]['cores'].items())[:4])
            for system in (VIGIL, BULLMQ)))
    print(f"highest on-time rate ({summary['criteria']}): {summary['best_rate_per_s']}")
