"""A ClickHouse server's HTTP face in front of the test session's chDB, with faults on demand.

clickhouse-connect talks to it as to a server: its start-up queries are answered, DESCRIBE
and INSERT go to chDB (the insert's Native block through a file, as `file(..., Native)`), and
while `failing` holds an error (code, text) every INSERT is answered exactly as a failing
server answers: status 500, `X-ClickHouse-Exception-Code` and `Code: N. DB::Exception: ...`.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import lz4.frame
from aiohttp import web

from engine.clickhouse import ClickHouse
from tests.support.servers import serve_app

_INSERT = re.compile(rb"^INSERT INTO `?(\w+)`? \(([^)]*)\) FORMAT Native\n", re.S)
_DESCRIBE = re.compile(rb"^DESCRIBE TABLE `?(\w+)`?")
DESCRIBE_COLUMNS = ("name", "type", "default_type", "default_expression", "comment",
                    "codec_expression", "ttl_expression")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str) -> bytes:
    raw = value.encode()
    return _varint(len(raw)) + raw


def native_strings(names: tuple[str, ...], rows: list[tuple[str, ...]]) -> bytes:
    """One Native-format block of String columns."""
    block = _varint(len(names)) + _varint(len(rows))
    for i, name in enumerate(names):
        block += _string(name) + _string("String") + b"".join(_string(r[i]) for r in rows)
    return block


class ClickHouseFront:
    def __init__(self, ch: ClickHouse, workdir: Path) -> None:
        self.ch = ch
        self.workdir = workdir
        self.failing: tuple[int, str] | None = None
        self.refused = 0
        self._files = itertools.count()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "lz4":
            body = lz4.frame.decompress(body)
        query = body or request.query.get("query", "").encode()
        if b"version()" in query:
            return web.Response(body=b"24.8.1.1\tUTC\n")
        if match := _DESCRIBE.match(query):
            rows = await self.ch.rows(f"DESCRIBE TABLE {match.group(1).decode()}")
            return web.Response(body=native_strings(
                DESCRIBE_COLUMNS, [tuple(str(v) for v in row[:7]) for row in rows]))
        if match := _INSERT.match(query):
            return await self._insert(match, query[match.end():])
        return web.Response(body=b"")

    async def _insert(self, match: re.Match[bytes], native: bytes) -> web.Response:
        if self.failing is not None:
            self.refused += 1
            code, text = self.failing
            return web.Response(status=500, headers={"X-ClickHouse-Exception-Code": str(code)},
                                text=f"Code: {code}. DB::Exception: {text}. (version 24.8.1.1)")
        path = self.workdir / f"insert-{next(self._files)}.native"
        path.write_bytes(native)
        table, columns = match.group(1).decode(), match.group(2).decode()
        await self.ch.command(f"INSERT INTO {table} ({columns}) "
                              f"SELECT {columns} FROM file('{path}', 'Native')")
        return web.Response(body=b"")


@contextlib.asynccontextmanager
async def clickhouse_front(ch: ClickHouse, workdir: Path) -> AsyncIterator[
        tuple[ClickHouseFront, str]]:
    """The front on a free port; yields it and its `http://` URL for ClickHouse.from_url."""
    front = ClickHouseFront(ch, workdir)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", front.handle)
    async with serve_app(app) as url:
        yield front, f"{url.replace('http://', 'http://default@')}/default"
