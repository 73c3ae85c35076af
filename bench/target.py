"""A minimal HTTP target for the pipeline benchmark: every request gets `200 ok`, then the
connection is closed (Vigil's executors open a fresh connection per check anyway).

The point is to cost as little CPU as possible, so the benchmark measures Vigil and not the
target: a bare asyncio Protocol on uvloop that answers as soon as the request head is complete
(no parsing beyond the blank line), or nginx with a one-line config.

Run:
    python bench/target.py --port 18080                  # asyncio Protocol on uvloop
    python bench/target.py --port 18080 --delay-ms 50    # the same, each answer 50 ms late
    python bench/target.py --port 18080 --server nginx   # nginx (worker_processes 1)

`--delay-ms` stands for a target with real latency (a service across a WAN): what a check
holds in flight, so what concurrency an executor needs, grows with it.

Binds 127.0.0.1 only. SIGTERM or Ctrl-C stops it. With `--server nginx` this process
becomes the nginx master (exec), so its pid is the one to signal; the config, pid file and
logs go to --workdir (default: a new temporary directory, left behind for inspection).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import tempfile
from pathlib import Path
from typing import cast

import uvloop

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\n\r\nok")
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024
BACKLOG = 4096


class OkProtocol(asyncio.Protocol):
    """Buffers until the end of the request head, answers (`delay_s` later), closes. No
    keep-alive, no body."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.delay_s = delay_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if HEAD_END in self.buffer or len(self.buffer) > MAX_HEAD:
            self.buffer = b""
            if self.delay_s:
                asyncio.get_running_loop().call_later(self.delay_s, self.answer)
            else:
                self.answer()

    def answer(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)
        self.transport.close()  # flushes the response first


async def serve(port: int, tls: ssl.SSLContext | None, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: OkProtocol(delay_s), "127.0.0.1", port,
                                      backlog=BACKLOG, reuse_address=True, ssl=tls)
    scheme = "https" if tls else "http"
    print(f"target listening on {scheme}://127.0.0.1:{port}/ (pid {os.getpid()})", flush=True)
    await stop.wait()
    server.close()  # no wait_closed(): connections are one request long, nothing to drain


def nginx_config(port: int, workdir: Path) -> str:
    """daemon off, one worker, `return 200 "ok"`; every path nginx writes is under workdir."""
    temp = "\n".join(f"    {name}_temp_path {workdir / name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'error.log'} warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    keepalive_timeout 0;
{temp}
    server {{
        listen 127.0.0.1:{port} backlog={BACKLOG} reuseport;
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
}}
"""


def exec_nginx(port: int, workdir: Path, binary: str) -> None:
    """Replace this process with nginx, so the caller's pid is the nginx master."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(port, workdir))
    print(f"target (nginx) on http://127.0.0.1:{port}/, config {conf}", flush=True)
    os.execv(binary, [binary, "-p", str(workdir), "-c", str(conf), "-e",
                      str(workdir / "error.log")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--server", choices=("python", "nginx"), default="python")
    ap.add_argument("--workdir", help="nginx only: where config, pid and logs go")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx",
                    help="nginx binary")
    ap.add_argument("--tls-cert", help="python only: serve HTTPS with this PEM chain")
    ap.add_argument("--tls-key", help="python only: the certificate's PEM key")
    ap.add_argument("--delay-ms", type=float, default=0.0,
                    help="python only: answer each request this long after it arrived")
    args = ap.parse_args()
    if args.server == "nginx":
        if args.delay_ms:
            ap.error("--delay-ms: only the python server delays its answers")
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vigil-nginx-"))
        exec_nginx(args.port, workdir.resolve(), args.nginx)
    else:
        tls = None
        if args.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        uvloop.run(serve(args.port, tls, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
