"""What `vigil channels ...`, `vigil deliveries` and `vigil notify test` print: the channels
(secrets REDACTED), the outbox's deliveries with their attempts, and a test message sent now
from this process, through the transports the notifier uses."""

from __future__ import annotations

from secrets import token_hex

import asyncpg
import orjson

from engine import channels
from engine.channels import delivery_key
from engine.guard import Guard
from engine.secrets import Keyring
from engine.settings import Settings
from notifier.transports import Transports


class NotFound(LookupError):
    """No such channel."""


async def list_channels(pool: asyncpg.Pool) -> None:
    rows = await channels.list_all(pool)
    if not rows:
        print("no channels (POST /api/v1/channels)")
    for row in rows:
        c = channels.described(row)
        routed = ", ".join(c["tags"]) or "-"
        print(f"{c['id']:<24} {c['service']:<10} {'on ' if c['enabled'] else 'off'} "
              f"events={','.join(c['events'])} tags={routed}"
              + (f" resend_every={c['resend_every_ms'] // 1000}s" if c["resend_every_ms"]
                 else ""))


async def show_channel(pool: asyncpg.Pool, channel_id: str) -> None:
    row = await channels.get(pool, channel_id)
    if row is None:
        raise NotFound(f"no channel {channel_id!r}")
    print(orjson.dumps(channels.described(row), option=orjson.OPT_INDENT_2).decode())


async def list_deliveries(pool: asyncpg.Pool, state: str | None, channel: str | None,
                          limit: int) -> None:
    rows = await channels.deliveries(pool, state=state, channel=channel, limit=limit)
    for d in rows:
        error = f"  last error: {d['last_error']}" if d["last_error"] else ""
        print(f"{d['created_at']}  {d['state']:<8} {d['channel_id']:<20} {d['message']:<20} "
              f"{d['monitor_id'] or '-'}  attempts {d['attempts']}/{d['max_attempts']}  "
              f"{d['key']}{error}")
    if not rows:
        print("no deliveries")


async def send_test(pool: asyncpg.Pool, channel_id: str, timeout_ms: int,
                    settings: Settings) -> str:
    """Send a test message to the channel now, only where the notifier's guard (built from
    `settings`) would; what happened, or raises NotFound or
    notifier.transports.TransportError."""
    row = await channels.get(pool, channel_id)
    if row is None:
        raise NotFound(f"no channel {channel_id!r}")
    guard = Guard(settings)
    await guard.refresh()
    transports = Transports(timeout_ms, guard)
    key = delivery_key(f"cli-test:{token_hex(8)}", channel_id)
    try:
        status = await transports.send(channels.opened(row, Keyring.from_env()), key,
                                       {"message": "test", "channel_id": channel_id})
    finally:
        await transports.close()
    return f"sent to {channel_id}" + (f" (HTTP {status})" if status else "")
