"""One executor process, flat out: checks/s and CPU per check, per check kind, beside bare
client loops measured in the same run.

For each kind it fills the checks stream with N check.due events (deadlines far away), starts
one `vigil executor` (real process, real redis-server) and measures from its first result to
its last: checks/s, and CPU microseconds per check of the executor process. Targets are local
and light: bench/target.py (HTTP, and HTTPS with a trustme certificate), the same port for
TCP connects, bench/dns_target.py for DNS. The baselines (bench/baselines.py, a fresh
connection per request, 50 at once) are what the same machine does with no engine at all:
aiohttp with force_close, a bare asyncio Protocol + httptools GET, a bare open_connection.

    python bench/executor.py                         # 20,000 checks per kind
    python bench/executor.py --n 5000 --kinds http,tcp
    python bench/executor.py --kinds http --target nginx --concurrency 50
    python bench/executor.py --kinds http --target nginx --executors 1,2,4 --n 60000

`--executors 1,2,4` runs HTTP again with that many executor processes on the one stream (one
shard): checks/s in all and per process, and redis-server's CPU per check, from which the
checks/s one Redis core carries follows.

`--target nginx` puts nginx (one worker, `keepalive_timeout 0`: a fresh connection per check,
as a real uptime check makes; bench/target.py writes its config) behind HTTP and TCP in place
of the asyncio responder, and the baselines measure against it too. `--profile FILE` records
the executor with py-spy (which must be installed) while it drains the HTTP checks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import trustme
from procs import (
    BENCH,
    BenchError,
    free_port,
    port_open,
    report_run,
    spawn,
    start_redis,
    start_target,
    stop_process,
    vigil,
    vigil_env,
    wait_until,
)
from sampling import command_delta, command_stats

from engine.events import CheckDue, CheckResult, check_id
from engine.keys import Keys
from engine.streams import EVENT_FIELD, event_of

KEYS = Keys("0")
KINDS = ("http", "https", "tcp", "dns")
MONITORS = 1_000


def spec(kind: str, ports: dict[str, int]) -> dict[str, Any]:
    """The kind's spec as stored; HTTP with its phase timings and assertions on."""
    http = {"url": f"http://127.0.0.1:{ports['http']}/", "expected_status": [200],
            "keyword": "ok", "degraded_ms": 1000}
    body: dict[str, Any] = {
        "http": http,
        "https": {**http, "url": f"https://localhost:{ports['https']}/"},
        "tcp": {"host": "127.0.0.1", "port": ports["http"]},
        "dns": {"name": "bench.test", "record_type": "A", "nameserver": "127.0.0.1",
                "port": ports["dns"], "expect": ["127.0.0.1"]},
    }[kind]
    return body


def fill(r: redis.Redis, kind: str, n: int, ports: dict[str, int]) -> None:
    stream = KEYS.checks("default")
    now = int(time.time() * 1000)
    body = spec(kind, ports)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        # MONITORS monitors checked over and over, as in production: each spec is parsed once.
        monitor_id = f"{kind}-{i % MONITORS}"
        due = CheckDue(check_id=check_id(monitor_id, "default", now + i), monitor_id=monitor_id,
                       region="default", scheduled_ms=now + i, deadline_ms=now + 3_600_000,
                       interval_ms=3_600_000, timeout_ms=10_000, spec_version=1,
                       kind="http" if kind == "https" else kind, spec=body)
        pipe.xadd(stream, {EVENT_FIELD: due.to_json()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def outcomes(r: redis.Redis) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, fields in r.xrange(KEYS.results):
        outcome = CheckResult.from_json(event_of(fields)).outcome
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def py_spy(pid: int, out: str, workdir: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `out` (collapsed stacks, for flamegraph.pl or speedscope)
    until it is sent SIGINT."""
    # The venv's own when it has one (pip install py-spy, for measurement only).
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    return spawn([binary, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                  "--nonblocking", "--output", out], workdir / "py-spy.log")


def measure_kind(kind: str, n: int, concurrency: int, ports: dict[str, int], r: redis.Redis,
                 redis_ps: psutil.Process, workdir: Path, env: dict[str, str],
                 profile: str | None, executors: int = 1) -> dict[str, Any]:
    """`executors` processes on one stream (one shard) drain n checks of `kind`."""
    r.flushall()
    fill(r, kind, n, ports)
    procs = [spawn(vigil("executor"), workdir / f"executor-{kind}-{executors}-{i}.log",
                   vigil_env(**env, VIGIL_CONCURRENCY=str(concurrency),
                             VIGIL_INSTANCE_ID=f"bench-{kind}-{i}"))
             for i in range(executors)]
    codes: list[int | str] = []
    try:
        ps = [psutil.Process(proc.pid) for proc in procs]

        def exited() -> bool:
            return any(proc.poll() is not None for proc in procs)

        wait_until(lambda: r.xlen(KEYS.results) > 0 or exited(), 60, f"{kind}: first result")
        spy = py_spy(procs[0].pid, profile, workdir) if profile and kind == "http" else None
        t0, n0 = time.perf_counter(), r.xlen(KEYS.results)
        c0, rc0 = sum(map(cpu_s, ps)), cpu_s(redis_ps)
        calls0 = command_stats(r)
        wait_until(lambda: r.xlen(KEYS.results) >= n or exited(), 600, f"{kind}: all results",
                   every=0.02)
        t1, n1 = time.perf_counter(), r.xlen(KEYS.results)
        c1, rc1 = sum(map(cpu_s, ps)), cpu_s(redis_ps)
        calls1 = command_stats(r)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    finally:
        codes = [stop_process(proc) for proc in procs]
    if n1 < n:
        raise BenchError(f"{kind}: {n1} of {n} results; see {workdir}/executor-{kind}-*.log")
    done = n1 - n0
    if done == 0:
        raise BenchError(f"{kind}: all {n} results came within one poll of the first; "
                         "a larger --n gives a measurable span")
    # The executor's calls per check (this harness's own polls, xlen and info, left out).
    calls = {name: round(delta["calls"] / done, 3)
             for name, delta in command_delta(calls0, calls1).items()
             if name in ("xreadgroup", "evalsha", "xack", "xadd", "xpending", "hset")}
    # psutil's CPU times tick at 10 ms: the redis-server figure wants tens of thousands of checks.
    return {"kind": kind, "n": n, "executors": executors, "per_s": round(done / (t1 - t0), 1),
            "per_s_per_process": round(done / (t1 - t0) / executors, 1),
            "cpu_us": round((c1 - c0) / done * 1e6, 1),
            "redis_cpu_us": round((rc1 - rc0) / done * 1e6, 1), "outcomes": outcomes(r),
            "redis_calls_per_check": calls, "exit": codes}


def baseline(mode: str, url: str, n: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(BENCH / "baselines.py"), mode, "--url", url,
                           "--n", str(n)], capture_output=True, text=True, timeout=600,
                          check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def start_https(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    chain, key, ca_file = workdir / "chain.pem", workdir / "key.pem", workdir / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    proc = spawn([sys.executable, str(BENCH / "target.py"), "--port", str(port),
                  "--tls-cert", str(chain), "--tls-key", str(key)], workdir / "https.log")
    wait_until(lambda: port_open(port), 10, "https target start")
    return proc, ca_file


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-exec-"))
    ports = {name: free_port() for name in ("http", "https", "dns")}
    server = start_redis(workdir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_target(workdir, ports["http"], args.target))
        https, ca_file = start_https(workdir, ports["https"])
        procs.append(https)
        procs.append(spawn([sys.executable, str(BENCH / "dns_target.py"), "--port",
                            str(ports["dns"])], workdir / "dns.log"))
        r = redis.Redis(port=server.port)
        redis_ps = psutil.Process(r.info("server")["process_id"])
        # The executor trusts the test CA the way a deployment trusts a private CA.
        env = {"VIGIL_REDIS_URL": server.url, "SSL_CERT_FILE": str(ca_file)}
        kinds = [measure_kind(kind, args.n, args.concurrency, ports, r, redis_ps, workdir, env,
                              args.profile) for kind in args.kinds]
        scale = [measure_kind("http", args.n, args.concurrency, ports, r, redis_ps, workdir,
                              env, None, executors) for executors in args.executors]
        url = f"http://127.0.0.1:{ports['http']}/"
        bases = [baseline(mode, url, args.n) for mode in ("aiohttp", "protocol", "connect")]
        return {"kinds": kinds, "scale": scale, "baselines": bases, "workdir": str(workdir)}
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        server.stop()


def report(res: dict[str, Any]) -> str:
    lines = [f"{'executor (one process)':24} {'checks/s':>10} {'CPU us/check':>13}  outcomes"]
    for k in res["kinds"]:
        lines.append(f"  {k['kind']:22} {k['per_s']:>10,.0f} {k['cpu_us']:>13,.1f}  "
                     f"{k['outcomes']} exit={k['exit']}")
        lines.append(f"  {'':22} Redis calls per check: {k['redis_calls_per_check']}")
    for k in res["kinds"]:
        lines.append(f"  {k['kind']:22} redis-server CPU per check {k['redis_cpu_us']:,.1f} us")
    if res["scale"]:
        lines.append(f"{'http, executors on one shard':30} {'checks/s':>9} {'per process':>12} "
                     f"{'CPU us/check':>13} {'redis us/check':>15} {'one Redis core':>15}")
    for k in res["scale"]:
        lines.append(f"  {k['executors']:<28} {k['per_s']:>9,.0f} {k['per_s_per_process']:>12,.0f}"
                     f" {k['cpu_us']:>13,.1f} {k['redis_cpu_us']:>15,.1f} "
                     f"{1e6 / max(k['redis_cpu_us'], 0.1):>11,.0f}/s")
    lines.append(f"{'baseline (no engine)':24} {'req/s':>10} {'CPU us/req':>13}")
    for b in res["baselines"]:
        lines.append(f"  {b['mode']:22} {b['per_s']:>10,.0f} {b['cpu_us']:>13,.1f}")
    by_kind = {k["kind"]: k for k in res["kinds"]}
    by_mode = {b["mode"]: b for b in res["baselines"]}
    if "http" in by_kind:
        http, aio, bare = by_kind["http"], by_mode["aiohttp"], by_mode["protocol"]
        lines.append(f"HTTP check vs aiohttp force_close: {http['per_s'] / aio['per_s']:.2f}x "
                     f"the rate, {http['cpu_us'] / aio['cpu_us']:.2f}x the CPU; vs bare "
                     f"Protocol+httptools: {http['cpu_us'] / bare['cpu_us']:.2f}x the CPU")
    if "tcp" in by_kind:
        lines.append(f"TCP check vs bare open_connection: "
                     f"{by_kind['tcp']['cpu_us'] / by_mode['connect']['cpu_us']:.2f}x the CPU")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="checks per kind")
    ap.add_argument("--concurrency", type=int, default=512, help="VIGIL_CONCURRENCY")
    ap.add_argument("--target", choices=("python", "nginx"), default="python",
                    help="the HTTP target: bench/target.py's asyncio responder or nginx")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the executor's HTTP run into FILE")
    ap.add_argument("--executors", default="", type=lambda s: [int(e) for e in s.split(",") if e],
                    help="scale-out: HTTP again with these counts of executor processes on the "
                         "one stream, e.g. 1,2,4")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    type=lambda s: [k for k in s.split(",") if k])
    args = ap.parse_args()
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        ap.error(f"--kinds: unknown {sorted(unknown)}; choose from {', '.join(KINDS)}")
    return report_run("executor", lambda: run(args), report)


if __name__ == "__main__":
    sys.exit(main())
