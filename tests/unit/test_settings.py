"""Settings.from_env: typed, loud on a bad value, `_FILE` variants for secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.region == "default"
    assert settings.concurrency == 1024
    assert settings.log_format == "console"
    assert settings.shards == 1
    assert settings.served == ("0",)
    assert settings.instance_id  # host-pid, never empty
    assert settings.claim_idle_ms == settings.max_timeout_ms + settings.claim_grace_ms
    assert (settings.max_per_host, settings.max_checks_per_minute) == (None, None)  # no limit


def test_overrides_from_env() -> None:
    settings = Settings.from_env({
        "VIGIL_REDIS_URL": "rediss://cache.example:6380/1",
        "VIGIL_POSTGRES_DSN": "postgres://u@db/vigil",
        "VIGIL_CLICKHOUSE_URL": "chdb:///var/lib/vigil/ch",
        "VIGIL_REGION": "eu-west_1",
        "VIGIL_CONCURRENCY": "32",
        "VIGIL_INSTANCE_ID": "exec-7",
        "VIGIL_LOG_FORMAT": "json",
        "VIGIL_SHARDS": "4",
        "VIGIL_SERVE_SHARDS": "1,3",
        "VIGIL_MAX_TIMEOUT_MS": "15000",
        "VIGIL_CLAIM_GRACE_MS": "0",
        "VIGIL_MAX_DELIVERIES": "5",
        "VIGIL_SINK_BATCH_SIZE": "100",
        "VIGIL_SINK_FLUSH_MS": "50",
        "VIGIL_RECONCILE_S": "10",
        "VIGIL_METRICS_PORT": "9100",
        "VIGIL_METRICS_HOST": "0.0.0.0",
        "VIGIL_MAX_PER_HOST": "4",
        "VIGIL_MAX_CHECKS_PER_MINUTE": "6000",
    })
    assert settings == Settings(
        redis_url="rediss://cache.example:6380/1", postgres_dsn="postgres://u@db/vigil",
        clickhouse_url="chdb:///var/lib/vigil/ch", region="eu-west_1", concurrency=32,
        instance_id="exec-7", log_format="json", shards=4, serve_shards=("1", "3"),
        max_timeout_ms=15_000,
        claim_grace_ms=0, max_deliveries=5, sink_batch_size=100, sink_flush_ms=50,
        reconcile_s=10, metrics_port=9100, metrics_host="0.0.0.0", max_per_host=4,
        max_checks_per_minute=6000)
    assert settings.claim_idle_ms == 15_000


@pytest.mark.parametrize("url", ["redis://localhost", "rediss://h:1/2", "unix:///tmp/r.sock"])
def test_redis_url_schemes(url: str) -> None:
    assert Settings.from_env({"VIGIL_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url", ["http://ch:8123/default", "https://ch.example/db",
                                 "chdb:///tmp/vigil"])
def test_clickhouse_url_schemes(url: str) -> None:
    assert Settings.from_env({"VIGIL_CLICKHOUSE_URL": url}).clickhouse_url == url


def test_empty_integer_means_default() -> None:
    assert Settings.from_env({"VIGIL_CONCURRENCY": ""}).concurrency == 1024
    assert Settings.from_env({"VIGIL_MAX_PER_HOST": ""}).max_per_host is None


def test_cli_overrides_win_and_none_means_not_given() -> None:
    settings = Settings.from_env({"VIGIL_REGION": "eu", "VIGIL_CONCURRENCY": "8"},
                                 region="us", concurrency=None)
    assert (settings.region, settings.concurrency) == ("us", 8)


@pytest.mark.parametrize(("name", "value"), [
    ("VIGIL_CONCURRENCY", "abc"),
    ("VIGIL_CONCURRENCY", "0"),
    ("VIGIL_CONCURRENCY", "-1"),
    ("VIGIL_CONCURRENCY", "1.5"),
    ("VIGIL_MAX_DELIVERIES", "0"),
    ("VIGIL_MAX_PER_HOST", "0"),
    ("VIGIL_MAX_PER_HOST", "-2"),
    ("VIGIL_MAX_PER_HOST", "two"),
    ("VIGIL_MAX_CHECKS_PER_MINUTE", "0"),
    ("VIGIL_MAX_CHECKS_PER_MINUTE", "-60"),
    ("VIGIL_MAX_CHECKS_PER_MINUTE", "100/s"),
    ("VIGIL_LAG_TARGET_MS", "0"),
    ("VIGIL_LAG_TARGET_MS", "1s"),
    ("VIGIL_MAX_TIMEOUT_MS", "99"),
    ("VIGIL_METRICS_PORT", "x"),
    ("VIGIL_METRICS_HOST", "every"),
    ("VIGIL_LOG_FORMAT", "xml"),
    ("VIGIL_LOG_FORMAT", "JSON"),
    ("VIGIL_LOG_FORMAT", ""),
    ("VIGIL_REDIS_URL", "http://x"),
    ("VIGIL_REDIS_URL", "localhost:6379"),
    ("VIGIL_POSTGRES_DSN", "mysql://db/vigil"),
    ("VIGIL_CLICKHOUSE_URL", "ftp://"),
    ("VIGIL_CLICKHOUSE_URL", "clickhouse.example:8123"),
    ("VIGIL_REGION", "eu west"),
    ("VIGIL_REGION", ""),
    ("VIGIL_REGION", "eu/west"),
])
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}=")
    assert repr(value) in message
    assert "expected" in message  # says what it accepts
    assert "\n" not in message  # one line


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://vigil:s3cret@db:5432/vigil\n")
    settings = Settings.from_env({"VIGIL_POSTGRES_DSN_FILE": str(secret),
                                  "VIGIL_POSTGRES_DSN": "postgresql://ignored@x/y"})
    assert settings.postgres_dsn == "postgresql://vigil:s3cret@db:5432/vigil"


@pytest.mark.parametrize("name", ["VIGIL_REDIS_URL", "VIGIL_CLICKHOUSE_URL"])
def test_other_urls_from_file(tmp_path: Path, name: str) -> None:
    value = "redis://:pw@r:6379/0" if name == "VIGIL_REDIS_URL" else "https://u:pw@ch:8443/db"
    path = tmp_path / "value"
    path.write_text(value)
    settings = Settings.from_env({f"{name}_FILE": str(path)})
    assert value in (settings.redis_url, settings.clickhouse_url)


def test_missing_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(SettingsError, match=r"^VIGIL_POSTGRES_DSN_FILE: cannot read") as info:
        Settings.from_env({"VIGIL_POSTGRES_DSN_FILE": str(missing)})
    assert str(missing) in str(info.value)


def test_bad_value_in_secret_file_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "dsn"
    path.write_text("mysql://db/vigil")
    with pytest.raises(SettingsError, match=r"^VIGIL_POSTGRES_DSN="):
        Settings.from_env({"VIGIL_POSTGRES_DSN_FILE": str(path)})


@pytest.mark.parametrize("region", ["zürich", "東京"])
def test_region_is_what_a_monitor_can_name(region: str) -> None:
    with pytest.raises(SettingsError, match=r"^VIGIL_REGION="):
        Settings.from_env({"VIGIL_REGION": region})


@pytest.mark.parametrize("served", ["4", "x", "3-1", "1-9", "-2"])
def test_served_shards_must_be_below_the_count(served: str) -> None:
    with pytest.raises(SettingsError, match=r"^VIGIL_SERVE_SHARDS: "):
        Settings.from_env({"VIGIL_SHARDS": "4", "VIGIL_SERVE_SHARDS": served})


def test_served_shards_take_ranges() -> None:
    settings = Settings.from_env({"VIGIL_SHARDS": "8", "VIGIL_SERVE_SHARDS": "0, 2-4,3"})
    assert settings.served == ("0", "2", "3", "4")
    assert Settings.from_env({"VIGIL_SHARDS": "3"}).served == ("0", "1", "2")


def test_zero_shards_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"^VIGIL_SHARDS="):
        Settings.from_env({"VIGIL_SHARDS": "0"})


def test_a_clickhouse_cluster_needs_a_server() -> None:
    env = {"VIGIL_CLICKHOUSE_CLUSTER": "vigil", "VIGIL_CLICKHOUSE_URL": "http://ch:8123/db"}
    assert Settings.from_env(env).clickhouse_cluster == "vigil"
    with pytest.raises(SettingsError, match=r"^VIGIL_CLICKHOUSE_CLUSTER='vigil': chDB runs no"):
        Settings.from_env({**env, "VIGIL_CLICKHOUSE_URL": "chdb:///tmp/ch"})
    with pytest.raises(SettingsError, match=r"^VIGIL_CLICKHOUSE_CLUSTER="):
        Settings.from_env({**env, "VIGIL_CLICKHOUSE_CLUSTER": "a b"})
