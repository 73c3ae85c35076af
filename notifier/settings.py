"""The notifier's settings, from VIGIL_NOTIFY_* variables (engine.settings' helpers: a bad
value fails at start-up naming the variable)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from engine.channels import Storm
from engine.settings import env_int


@dataclass(frozen=True, slots=True)
class NotifySettings:
    # Eight attempts with the backoff below span about four minutes before the jitter: a
    # receiver restarting or a short outage of its service is waited out, a dead one is not
    # retried for hours.
    max_attempts: int = 8
    backoff_ms: int = 1_000
    backoff_max_ms: int = 300_000
    # One send's bound (connect to answer); the lease is this plus LEASE_GRACE_MS.
    timeout_ms: int = 10_000
    concurrency: int = 32
    batch: int = 100
    storm_count: int = 10
    storm_window_ms: int = 30_000
    storm_quiet_ms: int = 1_000
    storm_gather_ms: int = 10_000
    # How often an idle sender looks for due deliveries (and reminders).
    poll_ms: int = 250

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifySettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            max_attempts=env_int(env, "VIGIL_NOTIFY_MAX_ATTEMPTS", d.max_attempts, 1),
            backoff_ms=env_int(env, "VIGIL_NOTIFY_BACKOFF_MS", d.backoff_ms, 1),
            backoff_max_ms=env_int(env, "VIGIL_NOTIFY_BACKOFF_MAX_MS", d.backoff_max_ms, 1),
            timeout_ms=env_int(env, "VIGIL_NOTIFY_TIMEOUT_MS", d.timeout_ms, 100),
            concurrency=env_int(env, "VIGIL_NOTIFY_CONCURRENCY", d.concurrency, 1),
            batch=env_int(env, "VIGIL_NOTIFY_BATCH", d.batch, 1),
            storm_count=env_int(env, "VIGIL_NOTIFY_STORM_COUNT", d.storm_count, 1),
            storm_window_ms=env_int(env, "VIGIL_NOTIFY_STORM_WINDOW_MS", d.storm_window_ms, 1),
            storm_quiet_ms=env_int(env, "VIGIL_NOTIFY_STORM_QUIET_MS", d.storm_quiet_ms, 1),
            storm_gather_ms=env_int(env, "VIGIL_NOTIFY_STORM_GATHER_MS", d.storm_gather_ms, 1),
            poll_ms=env_int(env, "VIGIL_NOTIFY_POLL_MS", d.poll_ms, 10),
        )

    @property
    def storm(self) -> Storm:
        return Storm(self.storm_count, self.storm_window_ms, self.storm_quiet_ms,
                     self.storm_gather_ms)


# A healthy sender holds a delivery at most its timeout and the time to record the attempt.
LEASE_GRACE_MS = 5_000
