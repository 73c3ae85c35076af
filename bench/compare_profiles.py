"""bench/compare.py's profiles (--profile): py-spy on a Vigil executor, node --cpu-prof on a
BullMQ worker, each read into the frames with the largest self and inclusive share."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from procs import BenchError

Stacks = list[tuple[list[str], float]]  # (frames root..leaf, weight) per sample


def pyspy_binary() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    return found


def start_pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy record of one process for `seconds`, 100 samples/s, raw (collapsed) stacks."""
    return subprocess.Popen([pyspy_binary(), "record", "-p", str(pid), "-d", str(int(seconds)),
                             "-r", "100", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def node_cpu_prof_args(out_dir: Path) -> list[str]:
    return ["--cpu-prof", "--cpu-prof-dir", str(out_dir)]


def top_frames(stacks: Stacks, n: int = 12) -> dict[str, Any]:
    """Self and inclusive share per frame, from (stack root..leaf, weight) samples."""
    total = sum(w for _, w in stacks) or 1.0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, w in stacks:
        if frames:
            own[frames[-1]] += w
        for f in set(frames):
            incl[f] += w
    return {"self": [(f, round(100 * w / total, 1)) for f, w in own.most_common(n)],
            "inclusive": [(f, round(100 * w / total, 1)) for f, w in incl.most_common(n)]}


def pyspy_stacks(path: Path) -> Stacks:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if body and count.isdigit():
            frames = [re.sub(r" \(.*?/(site-packages|lib/python[\d.]+)/", " (", f)
                      for f in body.split(";")[1:]]  # drop the process/thread root
            stacks.append((frames, float(count)))
    return stacks


def cpuprofile_stacks(path: Path) -> Stacks:
    prof = json.loads(path.read_text())
    nodes = {n["id"]: n for n in prof["nodes"]}
    parent = {c: n["id"] for n in prof["nodes"] for c in n.get("children", [])}

    def label(node: dict[str, Any]) -> str:
        cf = node["callFrame"]
        url = cf.get("url", "").split("node_modules/")[-1].rsplit("/", 1)[-1]
        return f"{cf.get('functionName') or '(anonymous)'} ({url}:{cf.get('lineNumber', 0) + 1})"

    counts = Counter(prof.get("samples", []))
    stacks = []
    for node_id, count in counts.items():
        frames, cur = [], node_id
        while cur in nodes:
            frames.append(label(nodes[cur]))
            cur = parent.get(cur, -1)
        if frames and not frames[0].startswith("(idle)"):  # waiting in epoll: not CPU
            stacks.append((frames[::-1][1:], float(count)))  # drop (root)
    return stacks


def pyspy_summary(path: Path, who: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return {"tool": f"py-spy ({who})", "file": str(path), **top_frames(pyspy_stacks(path))}


def cpuprofile_summary(out_dir: Path, who: str) -> dict[str, Any] | None:
    profs = sorted(out_dir.glob("*.cpuprofile"))
    if not profs:
        return None
    return {"tool": f"node --cpu-prof ({who})", "file": str(profs[0]),
            **top_frames(cpuprofile_stacks(profs[0]))}
