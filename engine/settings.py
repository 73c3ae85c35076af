"""Typed settings from the environment, with `_FILE` variants for secrets.

A bad value fails at start-up with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.shards import all_shards
from engine.text import redact

# Regions and shards become parts of Redis key names (and a shard, a cluster hash tag).
NAME_PATTERN = r"[A-Za-z0-9_-]{1,32}"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """A string variable; `NAME_FILE` (a path to a file holding the value) wins when set."""
    file_name = env.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {file_name!r}: {exc.strerror}") from exc
    return env.get(name, default)


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer >= {minimum}") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: expected an integer >= {minimum}")
    return value


def env_limit(env: Mapping[str, str], name: str) -> int | None:
    """An optional limit: unset or empty is none (unlimited), else an integer >= 1."""
    return env_int(env, name, 0, minimum=1) if env.get(name) else None


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default)
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def env_address(env: Mapping[str, str], name: str, default: str) -> str:
    """An IP address to listen on (0.0.0.0 or :: for every interface)."""
    value = env.get(name) or default
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected an IP address to listen on, "
                            "e.g. 127.0.0.1 or 0.0.0.0") from None
    return value


def check_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in schemes:
        # A password must not reach the logs through the error message.
        raise SettingsError(f"{name}={redact(value, value)!r}: expected a URL starting with one of "
                            + ", ".join(f"{s}://" for s in schemes))
    return value


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
TARGET_SYNTAX = "a CIDR (10.0.0.0/8, fd00::/8), ip:port, [v6]:port or unix:/path"


@dataclass(frozen=True, slots=True)
class Target:
    """One entry of VIGIL_DENY_TARGETS or VIGIL_ALLOW_TARGETS: a network (any port when `port`
    is None; a bare IP is its own /32 or /128) or a unix socket path (engine.guard)."""

    network: IPNetwork | None = None
    port: int | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """`10.0.0.0/8`, `192.0.2.7`, `192.0.2.7:6379`, `[::1]:5432` or `unix:/run/x.sock`."""
        if text.startswith("unix:"):
            path = text.removeprefix("unix:")
            if not path.startswith("/"):
                raise ValueError("a unix socket path must be absolute")
            return cls(path=path)
        host, port = text, None
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError("a bracketed IPv6 address is followed by :port")
        elif text.count(":") == 1:  # IPv4 and a port; an IPv6 address has more colons
            host, port = text.split(":")
        network = ipaddress.ip_network(host)  # its ValueError says what is wrong
        if port is None:
            return cls(network=network)
        if not port.isdigit() or not 1 <= int(port) <= 65535 or network.num_addresses != 1:
            raise ValueError("expected one address and a port 1-65535")
        return cls(network=network, port=int(port))

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        assert self.network is not None
        if self.port is None:
            return str(self.network)
        ip = self.network.network_address
        return f"[{ip}]:{self.port}" if ip.version == 6 else f"{ip}:{self.port}"


def env_targets(env: Mapping[str, str], name: str) -> tuple[Target, ...]:
    """A comma-separated list of targets; an empty or unset variable is none."""
    out = []
    for item in filter(None, (part.strip() for part in env.get(name, "").split(","))):
        try:
            out.append(Target.parse(item))
        except ValueError as exc:
            raise SettingsError(f"{name}: {item!r} is not {TARGET_SYNTAX} ({exc})") from None
    return tuple(out)


def env_shards(env: Mapping[str, str], name: str, count: int) -> tuple[str, ...]:
    """Shard numbers below `count`, comma-separated, with ranges: `0,2,4-7`; unset is none
    (then a process serves every shard)."""
    out: list[str] = []
    for item in filter(None, (part.strip() for part in env.get(name, "").split(","))):
        low, _, high = item.partition("-")
        if not low.isdigit() or not (high or low).isdigit() or int(low) > int(high or low):
            raise SettingsError(f"{name}: {item!r} is not a shard number or a range like 2-5")
        if int(high or low) >= count:
            raise SettingsError(f"{name}: shard {int(high or low)} is not below VIGIL_SHARDS "
                                f"({count}); shards are numbered 0 to {count - 1}")
        out += [str(i) for i in range(int(low), int(high or low) + 1) if str(i) not in out]
    return tuple(out)


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_dsn: str = "postgresql://vigil@127.0.0.1:5432/vigil"
    clickhouse_url: str = "http://default@127.0.0.1:8123/default"
    region: str = "default"
    concurrency: int = 1024
    instance_id: str = field(default_factory=default_instance_id)
    log_format: str = "console"
    # Monitors are spread over this many shards (engine.shards), each one Redis Cluster hash
    # tag; a process serves the shards in serve_shards (empty: all of them).
    shards: int = 1
    serve_shards: tuple[str, ...] = ()
    # A ClickHouse cluster name (remote_servers): the migrations create replicated tables
    # ON CLUSTER with a Distributed table in front (engine.migrate).
    clickhouse_cluster: str = ""
    # Upper bound of any monitor's timeout; the claim sweeper waits this plus the grace.
    max_timeout_ms: int = 30_000
    claim_grace_ms: int = 5_000
    max_deliveries: int = 3
    sink_batch_size: int = 5_000
    sink_flush_ms: int = 500
    reconcile_s: int = 30
    metrics_port: int = 0
    # Loopback by default: metrics say how busy Vigil is and which regions and channels exist.
    # A container sets 0.0.0.0 to be scraped inside its network.
    metrics_host: str = "127.0.0.1"
    # How long a role may take to stop after SIGTERM; what it could not finish stays pending
    # in Redis for a peer or its successor (compose gives 30 s before SIGKILL).
    drain_s: int = 20
    # The retention of every stream, whatever its groups have read: a group that stops (a
    # sink down for hours, an abandoned group) loses what is older rather than growing Redis
    # without bound. At 1,000 checks/s six hours of results are ~21.6 M entries; the length
    # cap comes first there.
    stream_max_age_s: int = 21_600
    stream_max_len: int = 2_000_000
    # Where no check may connect, beyond Vigil's own servers and the link-local ranges that
    # engine.guard always denies, and the holes in that list (an operator probing their
    # own Redis or Postgres on purpose).
    deny_targets: tuple[Target, ...] = ()
    allow_targets: tuple[Target, ...] = ()
    # Checks of one target host an executor runs at once (executors.admission), and checks
    # every executor together may start a minute (executors.ceiling); None is no limit.
    max_per_host: int | None = None
    max_checks_per_minute: int | None = None
    # How late after its slot a check may start while an executor is behind (executors.
    # admission.Shedding); a check of an executor that keeps up runs until its deadline.
    lag_target_ms: int = 1_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        settings = cls(
            redis_url=check_url("VIGIL_REDIS_URL",
                                env_str(env, "VIGIL_REDIS_URL", defaults.redis_url),
                                ("redis", "rediss", "unix", "redis+cluster",
                                 "rediss+cluster")),
            postgres_dsn=check_url("VIGIL_POSTGRES_DSN",
                                   env_str(env, "VIGIL_POSTGRES_DSN", defaults.postgres_dsn),
                                   ("postgresql", "postgres")),
            clickhouse_url=check_url("VIGIL_CLICKHOUSE_URL",
                                     env_str(env, "VIGIL_CLICKHOUSE_URL", defaults.clickhouse_url),
                                     ("http", "https", "chdb")),
            region=env.get("VIGIL_REGION", defaults.region),
            concurrency=env_int(env, "VIGIL_CONCURRENCY", defaults.concurrency, minimum=1),
            instance_id=env.get("VIGIL_INSTANCE_ID") or defaults.instance_id,
            log_format=env_choice(env, "VIGIL_LOG_FORMAT", defaults.log_format,
                                  ("console", "json")),
            shards=env_int(env, "VIGIL_SHARDS", defaults.shards, 1),
            clickhouse_cluster=env.get("VIGIL_CLICKHOUSE_CLUSTER", defaults.clickhouse_cluster),
            max_timeout_ms=env_int(env, "VIGIL_MAX_TIMEOUT_MS", defaults.max_timeout_ms, 100),
            claim_grace_ms=env_int(env, "VIGIL_CLAIM_GRACE_MS", defaults.claim_grace_ms, 0),
            max_deliveries=env_int(env, "VIGIL_MAX_DELIVERIES", defaults.max_deliveries, 1),
            sink_batch_size=env_int(env, "VIGIL_SINK_BATCH_SIZE", defaults.sink_batch_size, 1),
            sink_flush_ms=env_int(env, "VIGIL_SINK_FLUSH_MS", defaults.sink_flush_ms, 1),
            reconcile_s=env_int(env, "VIGIL_RECONCILE_S", defaults.reconcile_s, 1),
            metrics_port=env_int(env, "VIGIL_METRICS_PORT", defaults.metrics_port, 0),
            metrics_host=env_address(env, "VIGIL_METRICS_HOST", defaults.metrics_host),
            drain_s=env_int(env, "VIGIL_DRAIN_S", defaults.drain_s, 1),
            stream_max_age_s=env_int(env, "VIGIL_STREAM_MAX_AGE_S", defaults.stream_max_age_s,
                                     60),
            stream_max_len=env_int(env, "VIGIL_STREAM_MAX_LEN", defaults.stream_max_len, 1_000),
            deny_targets=env_targets(env, "VIGIL_DENY_TARGETS"),
            allow_targets=env_targets(env, "VIGIL_ALLOW_TARGETS"),
            max_per_host=env_limit(env, "VIGIL_MAX_PER_HOST"),
            max_checks_per_minute=env_limit(env, "VIGIL_MAX_CHECKS_PER_MINUTE"),
            lag_target_ms=env_int(env, "VIGIL_LAG_TARGET_MS", defaults.lag_target_ms, 1),
        )
        settings = settings.with_overrides(**overrides)
        if not re.fullmatch(NAME_PATTERN, settings.region):
            raise SettingsError(f"VIGIL_REGION={settings.region!r}: expected 1 to 32 of "
                                "A-Z a-z 0-9 _ -")
        if settings.clickhouse_cluster and not re.fullmatch(NAME_PATTERN,
                                                            settings.clickhouse_cluster):
            raise SettingsError(f"VIGIL_CLICKHOUSE_CLUSTER={settings.clickhouse_cluster!r}: "
                                "expected 1 to 32 of A-Z a-z 0-9 _ -")
        if settings.clickhouse_cluster and settings.clickhouse_url.startswith("chdb://"):
            raise SettingsError(f"VIGIL_CLICKHOUSE_CLUSTER={settings.clickhouse_cluster!r}: "
                                "chDB runs no cluster; VIGIL_CLICKHOUSE_URL must name a "
                                "ClickHouse server (http:// or https://)")
        return replace(settings, serve_shards=env_shards(env, "VIGIL_SERVE_SHARDS",
                                                         settings.shards))

    def with_overrides(self, **overrides: Any) -> Settings:
        """CLI flags override the environment; None means "not given"."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given) if given else self

    @property
    def served(self) -> tuple[str, ...]:
        """The shards this process serves: serve_shards, or every one."""
        return self.serve_shards or all_shards(self.shards)

    @property
    def retention(self) -> tuple[int, int]:
        """(max age ms, max length) of every stream."""
        return self.stream_max_age_s * 1000, self.stream_max_len

    @property
    def claim_idle_ms(self) -> int:
        """An entry idle this long is stalled: no healthy executor holds a check longer."""
        return self.max_timeout_ms + self.claim_grace_ms
