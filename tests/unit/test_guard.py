"""The deny list's rules on their own (engine.guard): VIGIL_DENY_TARGETS and
VIGIL_ALLOW_TARGETS as settings, Vigil's own servers as its clients read their URLs, and
which address forms reach which rule. The attacks themselves run through the executor in
tests/integration/test_guard.py."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from engine.guard import Denied, Guard
from engine.settings import Settings, SettingsError, Target


@pytest.mark.parametrize("text", ["10.0.0.0/8", "192.0.2.7/32", "192.0.2.7:6379",
                                  "[::1]:5432", "fd00::/8", "unix:/run/vigil/redis.sock"])
def test_targets_read_as_they_are_written(text: str) -> None:
    assert str(Target.parse(text)) == text


@pytest.mark.parametrize(("value", "why"), [
    ("10.0.0.1/8", "host bits set"),
    ("192.0.2.7:0", "port 1-65535"),
    ("10.0.0.0/8:80", "one address and a port"),
    ("[::1]", "followed by :port"),
    ("unix:redis.sock", "absolute"),
    ("db.internal:5432", "does not appear to be an IPv4 or IPv6"),
])
def test_a_bad_target_fails_at_start_naming_the_variable(value: str, why: str) -> None:
    for name in ("VIGIL_DENY_TARGETS", "VIGIL_ALLOW_TARGETS"):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({name: f"10.0.0.0/8, {value}"})
        message = str(caught.value)
        assert message.startswith(f"{name}: {value!r} is not a CIDR")
        assert why in message
        assert "\n" not in message


def test_lists_are_comma_separated() -> None:
    settings = Settings.from_env({"VIGIL_DENY_TARGETS": " 10.0.0.0/8,192.0.2.7:25 ,",
                                  "VIGIL_ALLOW_TARGETS": "unix:/run/x.sock"})
    assert [str(t) for t in settings.deny_targets] == ["10.0.0.0/8", "192.0.2.7:25"]
    assert [str(t) for t in settings.allow_targets] == ["unix:/run/x.sock"]
    assert Settings.from_env({}).deny_targets == ()


def denies(guard: Guard, ip: str, port: int | None) -> bool:
    try:
        guard.check(ip, port)
    except Denied:
        return True
    return False


@pytest.mark.parametrize(("ip", "port", "expected"), [
    ("127.0.0.1", 6379, True),
    # Every address that reaches this host reaches a server listening on 127.0.0.1.
    ("127.0.0.2", 6379, True),
    ("0.0.0.0", 6379, True),
    ("::", 6379, True),
    ("::1", 6379, True),
    ("::ffff:127.0.0.1", 6379, True),
    ("127.0.0.1", 6380, False),
    ("192.0.2.1", 6379, False),
    ("169.254.169.254", 80, True),
    ("::ffff:169.254.169.254", 80, True),
    ("fe80::1%lo", 80, True),
    ("fd00:ec2::254", 80, True),
    ("100.100.100.200", 80, True),
    ("100.100.100.201", 80, False),
    # A ping opens no port: only whole networks are denied to it.
    ("127.0.0.1", None, False),
    ("169.254.169.254", None, True),
])
def test_address_forms(ip: str, port: int | None, expected: bool) -> None:
    assert denies(Guard(Settings(redis_url="redis://127.0.0.1:6379/0")), ip, port) is expected


def test_a_remote_own_server_is_its_address_only() -> None:
    guard = Guard(Settings(postgres_dsn="postgresql://vigil@192.0.2.5:5432/vigil"))
    assert denies(guard, "192.0.2.5", 5432)
    assert denies(guard, "::ffff:192.0.2.5", 5432)
    assert not denies(guard, "192.0.2.6", 5432)
    assert not denies(guard, "192.0.2.5", 5433)


def test_allow_targets_win_and_deny_targets_add() -> None:
    guard = Guard(Settings(deny_targets=(Target.parse("10.0.0.0/8"),),
                           allow_targets=(Target.parse("10.1.2.3:5432"),
                                          Target.parse("169.254.169.254/32"))))
    assert denies(guard, "10.9.9.9", 443)
    assert not denies(guard, "10.1.2.3", 5432)
    assert denies(guard, "10.1.2.3", 5433)
    assert not denies(guard, "169.254.169.254", 80)
    with pytest.raises(Denied, match=r"^denied: 10\.9\.9\.9:443 is in VIGIL_DENY_TARGETS "
                                     r"\(10\.0\.0\.0/8\); allow it with "
                                     r"VIGIL_ALLOW_TARGETS=10\.9\.9\.9:443$"):
        guard.check("10.9.9.9", 443)


def test_own_sockets_are_real_paths(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "run")
    guard = Guard(Settings(redis_url=f"unix://{tmp_path}/run/redis.sock",
                           postgres_dsn=f"postgresql://u@/db?host={tmp_path}/link"))
    for path in (f"{tmp_path}/run/redis.sock", f"{tmp_path}/link/../run/redis.sock",
                 f"{tmp_path}/link/redis.sock", f"{tmp_path}/run/.s.PGSQL.5432"):
        with pytest.raises(Denied):
            guard.check_path(path)
    guard.check_path(f"{tmp_path}/run/other.sock")
    allowed = Guard(Settings(redis_url=f"unix://{tmp_path}/run/redis.sock",
                             allow_targets=(Target.parse(f"unix:{tmp_path}/link/redis.sock"),)))
    allowed.check_path(f"{tmp_path}/run/redis.sock")


@pytest.mark.parametrize(("dsn", "denied"), [
    ("postgresql://u@192.0.2.1:5433,192.0.2.2/vigil", [("192.0.2.1", 5433), ("192.0.2.2", 5432)]),
    ("postgresql://u@[2001:db8::5]:6000/vigil", [("2001:db8::5", 6000)]),
    ("postgres://u@192.0.2.9/vigil?port=7000", [("192.0.2.9", 7000)]),
])
def test_own_postgres_hosts_as_asyncpg_reads_them(dsn: str, denied: list[tuple[str, int]]) -> None:
    guard = Guard(Settings(postgres_dsn=dsn))
    for ip, port in denied:
        assert denies(guard, ip, port)
    assert not denies(guard, denied[0][0], 1)


async def test_own_host_names_are_resolved_at_start() -> None:
    guard = Guard(Settings(clickhouse_url="http://default@localhost:8124/default"))
    assert not denies(guard, "127.0.0.1", 8124)
    await guard.start()
    assert denies(guard, "127.0.0.1", 8124)


async def test_a_new_address_of_an_own_server_is_denied_at_the_next_refresh() -> None:
    """A managed Redis fails over and its name now resolves elsewhere: the new address is
    denied from the next refresh on, and the old one stays denied."""
    answers = {"first": "192.0.2.10", "then": "192.0.2.20"}
    current = ["first"]

    async def lookup(host: str, port: int) -> list[Any]:
        assert host == "redis.internal"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[current[0]], port))]

    guard = Guard(Settings(redis_url="redis://redis.internal:6379/0"), lookup=lookup)
    await guard.start()
    assert denies(guard, "192.0.2.10", 6379)
    assert not denies(guard, "192.0.2.20", 6379)
    current[0] = "then"
    await guard.refresh()
    assert denies(guard, "192.0.2.20", 6379)
    assert denies(guard, "192.0.2.10", 6379)
