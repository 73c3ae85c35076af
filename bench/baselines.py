"""Bare client loops, the floor an executor's HTTP and TCP checks are compared with.

Each mode makes N requests (or connections) with at most C at once, a fresh connection each,
and prints one JSON line: {"mode", "n", "seconds", "per_s", "cpu_us"} (CPU of this process).

    python bench/baselines.py aiohttp --url http://127.0.0.1:18080/ --n 20000
    python bench/baselines.py protocol --url http://127.0.0.1:18080/ --n 20000
    python bench/baselines.py connect --url http://127.0.0.1:18080/ --n 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from urllib.parse import urlsplit

import aiohttp
import httptools
import uvloop


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Get(asyncio.Protocol):
    """The least a parsed GET can cost: write the request, feed httptools, close at the end."""

    def __init__(self, request: bytes, done: asyncio.Future[int]) -> None:
        self.request = request
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(self.parser.get_status_code())
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def protocol_get(host: str, port: int, request: bytes) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    await loop.create_connection(lambda: Get(request, done), host, port)
    await done


async def run(mode: str, url: str, n: int, concurrency: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "Connection: close\r\n\r\n").encode()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            if mode == "aiohttp":
                async with session.get(url) as resp:
                    await resp.read()
            elif mode == "protocol":
                await protocol_get(host, port, request)
            else:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                await writer.wait_closed()

    start, cpu = time.perf_counter(), cpu_s()
    await asyncio.gather(*(one() for _ in range(n)))
    seconds, used = time.perf_counter() - start, cpu_s() - cpu
    await session.close()
    return {"mode": mode, "n": n, "seconds": round(seconds, 3), "per_s": round(n / seconds, 1),
            "cpu_us": round(used / n * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("aiohttp", "protocol", "connect"))
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    print(json.dumps(uvloop.run(run(args.mode, args.url, args.n, args.concurrency))))


if __name__ == "__main__":
    main()
