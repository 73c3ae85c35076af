"""Notification channels and their outbox in Postgres: the one place that holds SQL about
channels, deliveries, attempts and open alerts, for the notifier and the API.

A channel is an apprise URL or a native webhook signed as Standard Webhooks says. Its URL and
its webhook secret are sealed at rest (engine.secrets) and never read back through the API.
Every time here is Postgres's `now()`: the outbox lives in that one database, so its clock is
the one every notifier process shares, whatever the hosts' clocks say.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as random
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import apprise
import asyncpg
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.monitors import (
    CHANNEL_PATTERN,
    MAX_NAME_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    durations_of,
)
from engine.secrets import PREFIX as SEALED
from engine.secrets import REDACTED, Keyring, SecretError
from engine.service import OUTAGES

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# Postgres away, for the outbox's users: asyncpg raises a bare InterfaceError ("connection is
# closed") on a connection the server or the network dropped, which is no bad event.
GONE: tuple[type[Exception], ...] = (*OUTAGES, asyncpg.InterfaceError)
# What a channel may be routed: `up` is an incident's resolve; `monitoring` is Vigil's own
# regions going stale and back (monitoring.degraded / restored).
Route = Literal["down", "up", "degraded", "monitoring", "flapping"]
EVENTS: tuple[Route, ...] = ("down", "up", "degraded", "monitoring", "flapping")
MAX_URL_LENGTH = 2_048
MIN_RESEND_MS = 1_000
MAX_RESEND_MS = 7 * 86_400_000
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
# What the API shows of a channel beyond what is written.
SHOWN_ONLY = ("service", "created_at", "updated_at")
# Messages the storm guard never folds: it sends them itself, or a person waits on them.
UNFOLDED = ("summary", "test")
UNFOLDED_SQL = ", ".join(f"'{m}'" for m in UNFOLDED)
# A message the storm guard may fold: not sent yet, never tried, not of those kinds.
FOLDABLE = f"state = 'pending' AND attempts = 0 AND message NOT IN ({UNFOLDED_SQL})"


def storming(count: str, window_ms: str) -> str:
    """The query of the channels in a storm, with its parameters' placeholders."""
    return f"""SELECT channel_id FROM deliveries
        WHERE created_at > now() - {window_ms} * interval '1 millisecond'
            AND message NOT IN ({UNFOLDED_SQL})
        GROUP BY channel_id HAVING count(*) > {count}"""


def delivery_key(source: str, channel_id: str) -> str:
    """The idempotency key (the webhook-id a receiver dedupes on): a function of what the
    message is about (an event id and its message, a reminder's number, a summary's parts)
    and the channel, so the same message to the same channel always has the same key."""
    digest = hashlib.sha256(f"{source}\x00{channel_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_` + base64 secret (Standard Webhooks)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def _plain_text(value: str) -> str:
    # Postgres text holds no NUL; only the store writes sealed text.
    if "\x00" in value:
        raise ValueError("a NUL character cannot be stored")
    if value.startswith(SEALED):
        raise ValueError(f"a value cannot start with {SEALED!r} (sealed text)")
    return value


class ChannelSpec(BaseModel):
    """A channel as written in an API body; `url` and `secret` may be REDACTED to keep the
    stored ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=CHANNEL_PATTERN)]
    kind: Literal["apprise", "webhook"]
    name: str = Field(default="", max_length=MAX_NAME_LENGTH)
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    secret: str | None = Field(default=None, max_length=200)
    events: list[Route] = Field(default_factory=lambda: list(EVENTS), min_length=1,
                                max_length=len(EVENTS))
    tags: list[Annotated[str, Field(max_length=MAX_TAG_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_TAGS)
    resend_every_ms: int | None = Field(default=None, ge=MIN_RESEND_MS, le=MAX_RESEND_MS)
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        # What `described` adds is ignored, so a channel read can be written back as it is.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in SHOWN_ONLY}
        return durations_of(data, ("resend_every",))

    @field_validator("name", "url", "secret")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        return None if value is None else _plain_text(value)

    @field_validator("tags")
    @classmethod
    def _storable_tags(cls, tags: list[str]) -> list[str]:
        return [_plain_text(t) for t in tags]

    @field_validator("url")
    @classmethod
    def _url_of_kind(cls, url: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if url == REDACTED:
            return url
        if kind == "webhook" and not url.startswith(("http://", "https://")):
            raise ValueError("a webhook URL starts with http:// or https://")
        if kind == "apprise" and apprise.Apprise.instantiate(url) is None:
            raise ValueError("not an apprise URL this server supports (see "
                             "https://github.com/caronc/apprise/wiki)")
        return url

    @field_validator("secret")
    @classmethod
    def _webhook_secret(cls, secret: str | None, info: ValidationInfo) -> str | None:
        if secret is None:
            return None
        if info.data.get("kind") != "webhook":
            raise ValueError("only a webhook channel has a secret")
        if secret == REDACTED:
            return secret
        try:
            ok = secret.startswith(SECRET_PREFIX) and len(secret_bytes(secret)) >= 16
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"expected {SECRET_PREFIX} and the base64 of at least 16 bytes "
                             "(leave it out to have one made)")
        return secret


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel as a notifier sends to it: its URL and secret opened."""

    id: str
    kind: str
    name: str
    url: str
    secret: str | None


COLUMNS = ("id, name, kind, url, secret, events, tags, resend_every_ms, enabled, created_at, "
           "updated_at")


def described(row: asyncpg.Record) -> dict[str, Any]:
    """A stored channel for the API and the CLI: its URL and secret REDACTED, its service
    (the URL's scheme) shown."""
    return {"id": row["id"], "name": row["name"], "kind": row["kind"], "url": REDACTED,
            "service": row["kind"] if row["kind"] == "webhook" else _scheme(row), "secret":
            REDACTED if row["secret"] else None, "events": list(row["events"]),
            "tags": list(row["tags"]), "resend_every_ms": row["resend_every_ms"],
            "enabled": row["enabled"], "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat()}


def _scheme(row: asyncpg.Record) -> str:
    # The scheme is kept in the clear beside the sealed text (`slack|vigil:sealed:...`).
    return str(row["url"]).partition("|")[0]


def opened(row: asyncpg.Record, keyring: Keyring) -> Channel:
    url = keyring.open("url", str(row["url"]).partition("|")[2])
    secret = keyring.open("secret", row["secret"]) if row["secret"] else None
    return Channel(id=row["id"], kind=row["kind"], name=row["name"], url=url, secret=secret)


def _sealed_url(keyring: Keyring, spec: ChannelSpec, old: asyncpg.Record | None) -> str:
    if spec.url == REDACTED:
        if old is None or old["kind"] != spec.kind:
            raise SecretError("url", f"{REDACTED} keeps the stored URL, and this channel has "
                                     "none of its kind: send the URL")
        return str(old["url"])
    scheme = "webhook" if spec.kind == "webhook" else spec.url.partition("://")[0].lower()
    if old is not None and old["kind"] == spec.kind and opened(old, keyring).url == spec.url:
        return str(old["url"])  # unchanged: the same sealed text, no needless write
    return f"{scheme}|{keyring.seal('url', spec.url)}"


async def get(conn: Conn | asyncpg.Pool, channel_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM channels WHERE id = $1", channel_id)
    return row


async def list_all(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(f"SELECT {COLUMNS} FROM channels ORDER BY id")


async def save(pool: asyncpg.Pool, spec: ChannelSpec, keyring: Keyring,
               create_only: bool = False) -> tuple[bool, str | None]:
    """Create or replace; (created, the webhook secret when one was made here: shown once).
    Raises SecretError (sealing needs VIGIL_SECRET_KEY; REDACTED needs a stored value), and
    FileExistsError with `create_only` when the channel exists."""
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(f"SELECT {COLUMNS} FROM channels WHERE id = $1 FOR UPDATE",
                                  spec.id)
        if old is not None and create_only:
            raise FileExistsError(spec.id)
        url = _sealed_url(keyring, spec, old)
        made: str | None = None
        secret: str | None = None
        if spec.kind == "webhook":
            if spec.secret not in (None, REDACTED):
                secret = keyring.seal("secret", str(spec.secret))
            elif old is not None and old["secret"]:
                secret = old["secret"]
            elif spec.secret == REDACTED:
                raise SecretError("secret", f"{REDACTED} keeps the stored secret, and there is "
                                            "none: send one or leave it out")
            else:
                made = new_secret()
                secret = keyring.seal("secret", made)
        await conn.execute(
            """INSERT INTO channels (id, name, kind, url, secret, events, tags, resend_every_ms,
                   enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (id) DO UPDATE SET name = $2, kind = $3, url = $4, secret = $5,
                   events = $6, tags = $7, resend_every_ms = $8, enabled = $9,
                   updated_at = now()""",
            spec.id, spec.name, spec.kind, url, secret, spec.events, spec.tags,
            spec.resend_every_ms, spec.enabled)
    return old is None, made


async def delete(pool: asyncpg.Pool, channel_id: str) -> bool:
    return await pool.fetchval("DELETE FROM channels WHERE id = $1 RETURNING true",
                               channel_id) is not None


# --- what the notifier's intake writes ----------------------------------------------------------

async def routing(conn: Conn, monitor_ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Monitor id -> its tags and the channels its `alerting.channels` names (none of either
    for a monitor that is gone)."""
    found = {r["id"]: (list(r["tags"]), list(r["channels"])) for r in await conn.fetch(
        """SELECT id, tags, ARRAY(SELECT jsonb_array_elements_text(
                      COALESCE(alerting->'channels', '[]'))) AS channels
           FROM monitors WHERE id = ANY($1::text[])""", monitor_ids)}
    return {m: found.get(m, ([], [])) for m in monitor_ids}


@dataclass(frozen=True, slots=True)
class Routes:
    """What routing needs of an enabled channel."""

    id: str
    events: frozenset[str]
    tags: frozenset[str]

    def takes(self, route: str, tags: list[str], named: list[str]) -> bool:
        """A monitor is routed here by a shared tag or by naming the channel."""
        return route in self.events and (self.id in named or not self.tags.isdisjoint(tags))


async def enabled(conn: Conn) -> list[Routes]:
    return [Routes(r["id"], frozenset(r["events"]), frozenset(r["tags"])) for r in
            await conn.fetch("SELECT id, events, tags FROM channels WHERE enabled ORDER BY id")]


@dataclass(frozen=True, slots=True)
class NewDelivery:
    key: str
    channel_id: str
    event_id: str
    message: str
    monitor_id: str | None
    payload: dict[str, Any]


async def add(conn: Conn, deliveries: list[NewDelivery], max_attempts: int) -> None:
    """Insert each once: the key is the primary key, so an event read again adds nothing."""
    await conn.executemany(
        """INSERT INTO deliveries (key, channel_id, event_id, message, monitor_id, payload,
               max_attempts) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
           ON CONFLICT (key) DO NOTHING""",
        [(d.key, d.channel_id, d.event_id, d.message, d.monitor_id,
          orjson.dumps(d.payload).decode(), max_attempts) for d in deliveries])


@dataclass(frozen=True, slots=True)
class OpenAlert:
    monitor_id: str
    alert: str
    subject: str
    opened: dict[str, Any]
    channel_ids: list[str]


async def open_alerts(conn: Conn, alerts: list[OpenAlert]) -> None:
    """Remember which channels got each alert, for its end and its reminders; an incident's
    first reminder is due `resend_every` after it opened."""
    await conn.executemany(
        """INSERT INTO open_alerts (monitor_id, alert, channel_id, subject, opened,
               next_reminder_at)
           SELECT $1, $2, c.id, $3, $4::jsonb,
                  CASE WHEN $2 = 'incident'
                       THEN now() + c.resend_every_ms * interval '1 millisecond' END
           FROM channels c WHERE c.id = ANY($5::text[])
           ON CONFLICT (monitor_id, alert, channel_id) DO UPDATE SET subject = EXCLUDED.subject,
               opened = EXCLUDED.opened, reminders = 0,
               next_reminder_at = EXCLUDED.next_reminder_at
           WHERE open_alerts.subject <> EXCLUDED.subject""",
        [(a.monitor_id, a.alert, a.subject, orjson.dumps(a.opened).decode(), a.channel_ids)
         for a in alerts])


async def close_alert(conn: Conn, monitor_id: str, alert: str,
                      subject: str) -> list[tuple[str, list[str]]]:
    """Forget the open alert; (channel id, its routes) of every channel that got it."""
    rows = await conn.fetch(
        """DELETE FROM open_alerts a USING channels c
           WHERE a.monitor_id = $1 AND a.alert = $2 AND a.subject = $3 AND c.id = a.channel_id
           RETURNING a.channel_id, c.events""", monitor_id, alert, subject)
    return [(r["channel_id"], list(r["events"])) for r in rows]


async def due_reminders(conn: Conn) -> list[asyncpg.Record]:
    """Count one more reminder of every open incident whose next one is due, and schedule the
    one after. Row locks make it atomic: of two notifiers at once, one sees each row due."""
    return await conn.fetch(
        """UPDATE open_alerts a SET reminders = a.reminders + 1,
               next_reminder_at = now() + c.resend_every_ms * interval '1 millisecond'
           FROM channels c
           WHERE c.id = a.channel_id AND a.next_reminder_at <= now()
           RETURNING a.monitor_id, a.channel_id, a.subject, a.opened::text AS opened,
               a.reminders, c.enabled""")


# --- what the notifier's sender claims and records -----------------------------------------------

@dataclass(frozen=True, slots=True)
class Storm:
    """More than `count` messages for one channel within `window_ms` are a storm: what is
    pending for it waits, and goes out as one summary once no new message came for `quiet_ms`,
    or once the oldest has waited `gather_ms` (a storm that goes on gives a summary that
    often)."""

    count: int
    window_ms: int
    quiet_ms: int
    gather_ms: int


@dataclass(frozen=True, slots=True)
class Claimed:
    key: str
    channel_id: str
    message: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int


LOST = "lease expired: the notifier sending it stopped before it could tell"


async def claim(pool: asyncpg.Pool, owner: str, limit: int, lease_ms: int,
                storm: Storm) -> list[Claimed]:
    """Take up to `limit` due deliveries for `owner` until the lease ends. FOR UPDATE SKIP
    LOCKED makes the claim atomic: notifiers share the outbox, none takes a row another
    holds. The storm is judged inside the same statement, so it sees the rows it claims: a
    burst is held back for fold_storms, never sent one by one."""
    rows = await pool.fetch(
        f"""UPDATE deliveries d SET state = 'sending', attempts = d.attempts + 1,
               lease_until = now() + $2 * interval '1 millisecond', leased_by = $3
           FROM (SELECT key FROM deliveries
                 WHERE state = 'pending' AND due_at <= now()
                   AND NOT ({FOLDABLE} AND channel_id IN ({storming("$4", "$5")}))
                 ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
           WHERE d.key = due.key
           RETURNING d.key, d.channel_id, d.message, d.payload::text AS payload,
               d.attempts, d.max_attempts""",
        limit, lease_ms, owner, storm.count, storm.window_ms)
    return [Claimed(key=r["key"], channel_id=r["channel_id"], message=r["message"],
                    payload=orjson.loads(r["payload"]), attempt=r["attempts"],
                    max_attempts=r["max_attempts"]) for r in rows]


async def expire_leases(pool: asyncpg.Pool) -> int:
    """Deliveries whose lease ran out (the notifier sending them was killed, or lost
    Postgres): the attempt is recorded as lost, and the delivery is due again under its key,
    or dead when that was its last attempt. How many."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO delivery_attempts (key, n, error)
               SELECT key, attempts, $1 FROM deliveries
               WHERE state = 'sending' AND lease_until <= now()
               ON CONFLICT (key, n) DO NOTHING""", LOST)
        expired: int = await conn.fetchval(
            """WITH gone AS (
                   UPDATE deliveries SET last_error = $1, lease_until = NULL, leased_by = NULL,
                       due_at = now(), state = CASE WHEN attempts >= max_attempts THEN 'dead'
                                                    ELSE 'pending' END
                   WHERE state = 'sending' AND lease_until <= now() RETURNING 1)
               SELECT count(*) FROM gone""", LOST)
    return expired


async def fold_storms(pool: asyncpg.Pool, storm: Storm) -> None:
    """In one transaction (the rows folded are locked, FOR UPDATE SKIP LOCKED, so two
    notifiers never fold the same message)."""
    async with pool.acquire() as conn, conn.transaction():
        await _fold_storms(conn, storm)


async def _fold_storms(conn: Conn, storm: Storm) -> None:
    """The channels in a storm now; for each whose pending messages are ready (quiet, or the
    oldest waited long enough), they become one summary delivery (its key made from theirs)
    and are `folded` into it."""
    for row in await conn.fetch(storming("$1", "$2"), storm.count, storm.window_ms):
        channel_id = row["channel_id"]
        ready = await conn.fetchval(
            f"""SELECT max(created_at) < now() - $2 * interval '1 millisecond'
                    OR min(created_at) < now() - $3 * interval '1 millisecond'
                FROM deliveries WHERE channel_id = $1 AND {FOLDABLE}""",
            channel_id, storm.quiet_ms, storm.gather_ms)
        if ready:
            await _fold(conn, channel_id)


async def _fold(conn: Conn, channel_id: str) -> None:
    folded = await conn.fetch(
        f"""SELECT key, message, monitor_id, event_id, max_attempts FROM deliveries
            WHERE channel_id = $1 AND {FOLDABLE}
            ORDER BY created_at, key FOR UPDATE SKIP LOCKED""", channel_id)
    if not folded:
        return
    parts = [f["key"] for f in folded]
    key = delivery_key("summary:" + hashlib.sha256(",".join(parts).encode()).hexdigest(),
                       channel_id)
    items = [{"message": f["message"], "monitor_id": f["monitor_id"], "event_id": f["event_id"],
              "key": f["key"]} for f in folded]
    await add(conn, [NewDelivery(key=key, channel_id=channel_id, event_id=f"summary:{key}",
                                 message="summary", monitor_id=None,
                                 payload={"message": "summary", "count": len(items),
                                          "items": items})],
              max(f["max_attempts"] for f in folded))
    await conn.execute("UPDATE deliveries SET state = 'folded', folded_into = $2 "
                       "WHERE key = ANY($1)", parts, key)


async def channels_of(pool: asyncpg.Pool, ids: list[str]) -> dict[str, asyncpg.Record]:
    return {r["id"]: r for r in await pool.fetch(
        f"SELECT {COLUMNS} FROM channels WHERE id = ANY($1)", ids)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's end: `retry_in_ms` None and no error is sent; an error with no retry is
    the last attempt (or a permanent failure): dead."""

    error: str | None = None
    http_status: int | None = None
    retry_in_ms: int | None = None


def _state(outcome: Outcome) -> str:
    if outcome.error is None:
        return "sent"
    return "pending" if outcome.retry_in_ms is not None else "dead"


async def record(pool: asyncpg.Pool, owner: str,
                 attempts: list[tuple[Claimed, Outcome]]) -> set[str]:
    """Record the attempts and move their deliveries on, in one transaction; the keys moved.
    One missing was leased again meanwhile (its lease ran out): the new holder's attempt is
    the one that counts."""
    keys = [c.key for c, _ in attempts]
    numbers = [c.attempt for c, _ in attempts]
    errors = [o.error for _, o in attempts]
    statuses = [o.http_status for _, o in attempts]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO delivery_attempts (key, n, error, http_status)
               SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[])
               ON CONFLICT (key, n) DO NOTHING""", keys, numbers, errors, statuses)
        moved = await conn.fetch(
            """UPDATE deliveries d SET state = u.state, last_error = u.error,
                   last_status = u.status, lease_until = NULL, leased_by = NULL,
                   due_at = CASE WHEN u.state = 'pending'
                                 THEN now() + u.retry_ms * interval '1 millisecond'
                                 ELSE d.due_at END,
                   sent_at = CASE WHEN u.state = 'sent' THEN now() END
               FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::text[],
                           $6::bigint[]) AS u(key, n, error, status, state, retry_ms)
               WHERE d.key = u.key AND d.state = 'sending' AND d.attempts = u.n
                   AND d.leased_by = $7
               RETURNING d.key""",
            keys, numbers, errors, statuses, [_state(o) for _, o in attempts],
            [o.retry_in_ms or 0 for _, o in attempts], owner)
    return {r["key"] for r in moved}


# --- what the API and the CLI read ---------------------------------------------------------------

STATES = ("pending", "sending", "sent", "dead", "folded")


async def add_test(pool: asyncpg.Pool, channel_id: str) -> str:
    """A test message to the channel, due now, one attempt: its key."""
    key = delivery_key(f"test:{random.token_hex(8)}", channel_id)
    async with pool.acquire() as conn:
        await add(conn, [NewDelivery(key=key, channel_id=channel_id, event_id=f"test:{key}",
                                     message="test", monitor_id=None,
                                     payload={"message": "test", "channel_id": channel_id})], 1)
    return key


DELIVERIES = """
SELECT d.key, d.channel_id, d.event_id, d.message, d.monitor_id, d.state, d.attempts,
       d.max_attempts, d.due_at, d.created_at, d.sent_at, d.folded_into, d.last_error,
       d.last_status,
       COALESCE((SELECT json_agg(json_build_object('n', a.n, 'at', a.at, 'error', a.error,
                                                   'http_status', a.http_status) ORDER BY a.n)
                 FROM delivery_attempts a WHERE a.key = d.key), '[]')::text AS tries
FROM deliveries d
"""


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    out = {k: row[k] for k in ("key", "channel_id", "event_id", "message", "monitor_id",
                               "state", "attempts", "max_attempts", "folded_into",
                               "last_error", "last_status")}
    for name in ("due_at", "created_at", "sent_at"):
        out[name] = row[name].isoformat() if row[name] else None
    out["attempt_log"] = orjson.loads(row["tries"])
    return out


async def delivery(pool: asyncpg.Pool, key: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"{DELIVERIES} WHERE d.key = $1", key)
    return None if row is None else _delivery(row)


async def deliveries(pool: asyncpg.Pool, state: str | None = None, event: str | None = None,
                     channel: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest deliveries first, filtered by state, event id and channel id."""
    rows = await pool.fetch(
        f"""{DELIVERIES} WHERE ($1::text IS NULL OR d.state = $1)
               AND ($2::text IS NULL OR d.event_id = $2)
               AND ($3::text IS NULL OR d.channel_id = $3)
            ORDER BY d.created_at DESC, d.key LIMIT $4""", state, event, channel, limit)
    return [_delivery(r) for r in rows]
