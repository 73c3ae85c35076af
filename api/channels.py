"""The channels API: create, read, replace, delete and test notification channels, and the
outbox's deliveries (engine.channels).

Reading needs a token with scope `read`, every change `write`, as for monitors. A channel's URL
and webhook secret are write-only: they come back REDACTED, and a PUT that sends REDACTED keeps
the stored one. A webhook's secret, made here when the body has none, is in the answer of the
request that made it, once. A test message is queued for the notifier, which sends it at once;
the answer waits a few seconds for its result (202 when no notifier has sent it by then).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api.auth import requires
from api.errors import invalid, json_error, json_object, json_response, unprocessable
from api.state import PG
from engine import channels
from engine.channels import ChannelSpec
from engine.maintenance import errors
from engine.secrets import Keyring, SecretError

BASE = "/api/v1/channels"
KEYRING = web.AppKey("channel_keyring", Keyring)
TEST_WAIT_S = 10.0
TEST_POLL_S = 0.1
LIST_MAX = 1_000


def _validate(data: dict[str, Any]) -> ChannelSpec:
    try:
        return ChannelSpec.model_validate(data)
    except ValidationError as exc:
        raise unprocessable("channel", errors(exc)) from None


async def _save(request: web.Request, spec: ChannelSpec, create_only: bool) -> web.Response:
    pool = request.app[PG]
    try:
        created, made = await channels.save(pool, spec, request.app[KEYRING], create_only)
    except SecretError as exc:
        raise invalid("channel", exc.field, exc.reason) from None
    except FileExistsError:
        raise json_error(web.HTTPConflict, f"channel {spec.id!r} exists; PUT it") from None
    row = await channels.get(pool, spec.id)
    assert row is not None
    body = channels.described(row)
    if made is not None:
        body["secret"] = made  # shown this once; only its sealed text is kept
    return json_response(body, status=201 if created else 200)


async def _existing(request: web.Request) -> asyncpg.Record:
    row = await channels.get(request.app[PG], request.match_info["channel_id"])
    if row is None:
        raise json_error(web.HTTPNotFound, f"no channel {request.match_info['channel_id']!r}")
    return row


@requires("write")
async def create(request: web.Request) -> web.Response:
    spec = _validate(await json_object(request, "a channel"))
    return await _save(request, spec, create_only=True)


@requires("read")
async def list_channels(request: web.Request) -> web.Response:
    rows = await channels.list_all(request.app[PG])
    return json_response({"channels": [channels.described(r) for r in rows]})


@requires("read")
async def show(request: web.Request) -> web.Response:
    return json_response(channels.described(await _existing(request)))


@requires("write")
async def replace(request: web.Request) -> web.Response:
    data = await json_object(request, "a channel")
    channel_id = request.match_info["channel_id"]
    if data.setdefault("id", channel_id) != channel_id:
        raise invalid("channel", "id", f"the body's id differs from the path's {channel_id!r}")
    return await _save(request, _validate(data), create_only=False)


@requires("write")
async def remove(request: web.Request) -> web.Response:
    if not await channels.delete(request.app[PG], request.match_info["channel_id"]):
        raise json_error(web.HTTPNotFound, f"no channel {request.match_info['channel_id']!r}")
    return web.Response(status=204)


@requires("write")
async def test(request: web.Request) -> web.Response:
    """Queue a test message and wait for the notifier's first attempt at it."""
    row = await _existing(request)
    pool = request.app[PG]
    key = await channels.add_test(pool, row["id"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TEST_WAIT_S
    while True:
        found = await channels.delivery(pool, key)
        assert found is not None
        if found["state"] in ("sent", "dead") or loop.time() >= deadline:
            break
        await asyncio.sleep(TEST_POLL_S)
    done = found["state"] in ("sent", "dead")
    return json_response({"sent": found["state"] == "sent", "delivery": found},
                         status=200 if done else 202)


def _query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return value or None


@requires("read")
async def list_deliveries(request: web.Request) -> web.Response:
    state = _query(request, "state")
    if state is not None and state not in channels.STATES:
        raise invalid("query", "state", f"expected one of {', '.join(channels.STATES)}")
    raw = request.query.get("limit", "100")
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= limit <= LIST_MAX:
        raise invalid("query", "limit", f"expected an integer from 1 to {LIST_MAX}")
    rows = await channels.deliveries(request.app[PG], state=state,
                                     event=_query(request, "event"),
                                     channel=_query(request, "channel"), limit=limit)
    return json_response({"deliveries": rows})


def add_channel_routes(app: web.Application) -> None:
    app[KEYRING] = Keyring.from_env()
    one = f"{BASE}/{{channel_id}}"
    app.router.add_post(BASE, create)
    app.router.add_get(BASE, list_channels)
    app.router.add_get(one, show)
    app.router.add_put(one, replace)
    app.router.add_delete(one, remove)
    app.router.add_post(f"{one}/test", test)
    app.router.add_get("/api/v1/deliveries", list_deliveries)
