"""The compose stack's shape: it needs passwords for every datastore, and executors (which run
what any monitor definition says) cannot reach Postgres or ClickHouse."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.helpers import repo_root


def stack() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root() / "docker-compose.yml").read_text())
    return loaded


def networks(service: dict[str, Any], default: list[str]) -> set[str]:
    return set(service.get("networks", default))


def test_executors_reach_redis_and_the_targets_only():
    services = stack()["services"]
    default = services["scheduler"]["networks"]
    executor = networks(services["executor"], default)
    assert executor & networks(services["redis"], default)
    for datastore in ("postgres", "clickhouse"):
        assert not executor & networks(services[datastore], default), datastore
    assert stack()["networks"]["data"]["internal"] is True


def test_every_datastore_has_a_required_password():
    text = (repo_root() / "docker-compose.yml").read_text()
    for variable in ("VIGIL_REDIS_PASSWORD", "VIGIL_POSTGRES_PASSWORD",
                     "VIGIL_CLICKHOUSE_PASSWORD"):
        assert f"${{{variable}:?" in text, variable
    services = stack()["services"]
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert "CLICKHOUSE_PASSWORD" in services["clickhouse"]["environment"]
    assert "CLICKHOUSE_SKIP_USER_SETUP" not in services["clickhouse"]["environment"]
