"""bench/compare.py's sweep plot: lag (p50, p99) against offered load for both systems, the
steps with missed slots circled (matplotlib, the `bench` extra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from compare_scoring import BULLMQ, LATE_MS, VIGIL


def title(executors: int, workers: int, interval_s: float, duration_s: float,
          cpus: int | None) -> str:
    return (f"Vigil ({executors} executors + scheduler + sinks) vs BullMQ ({workers} workers), "
            f"interval {interval_s:g} s, {duration_s:g} s windows, {cpus} cores; circles: "
            "missed slots")


def plot(summary: dict[str, Any], path: Path, heading: str) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    rates = [s["offered_per_s"] for s in summary["steps"]]
    for system, color in ((VIGIL, "tab:blue"), (BULLMQ, "tab:red")):
        for q, style in (("p50", "--"), ("p99", "-")):
            ys = [max(1.0, s[system]["lag_ms"][q] or float("nan")) for s in summary["steps"]]
            ax.plot(rates, ys, style, marker="o", color=color, label=f"{system} {q}")
        missed = [(s["offered_per_s"], s[system]["lag_ms"]["p99"]) for s in summary["steps"]
                  if s[system]["missed"]]
        if missed:
            ax.scatter([m[0] for m in missed], [max(1.0, m[1] or 1.0) for m in missed],
                       s=160, facecolors="none", edgecolors=color, label=f"{system}: missed slots")
    ax.axhline(LATE_MS, color="grey", linewidth=0.8, linestyle=":", label="1 s (on-time limit)")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, checks/s")
    ax.set_ylabel("lag, scheduled -> result recorded (ms)")
    ax.set_title(heading, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
