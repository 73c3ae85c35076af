"""The deny list through the real executor (engine.guard): no check reaches Vigil's own
Redis or Postgres, a cloud metadata address or a VIGIL_DENY_TARGETS entry, by whatever name
or address form it is given, unless VIGIL_ALLOW_TARGETS allows it. A denied check is an
`error` `denied` naming the rule, and its target never sees a connection.

The executors here run with settings whose own servers are the test session's redis-server
and Postgres, as in a deployment on them."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from engine.events import CheckResult
from engine.keys import Keys
from engine.resolver import Address, ResolveError, Resolver
from engine.settings import Settings, Target
from tests.support.dns_server import DnsServer
from tests.support.hostile import RawServer, answer, silent
from tests.support.kind_executor import check_due, run_checks
from tests.support.pg import login_role, socket_dsn
from tests.support.tls import certificates, tls_redis

# What the attacker sent to Vigil's Redis through a tcp monitor.
SEND = "SET viatcp 1\r\nCONFIG GET dir\r\n"
OWN_REDIS = "is Vigil's own Redis (VIGIL_REDIS_URL)"
OWN_POSTGRES = "is Vigil's own Postgres (VIGIL_POSTGRES_DSN)"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Hosts(Resolver):
    """Names from a table, as /etc/hosts gives them: names that no real DNS knows, so a check
    that reaches one went to the address the guard checked, not to a name a library resolved
    again."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        super().__init__()
        self.table = table

    async def _lookup(self, host: str, port: int) -> list[Address]:
        if host not in self.table:
            raise ResolveError(f"{host}: Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip) for ip in self.table[host]]


def own(redis_url: str, postgres_dsn: str, **extra: Any) -> Settings:
    return Settings(redis_url=redis_url, postgres_dsn=postgres_dsn, max_timeout_ms=2_000,
                    instance_id="exec-guard", **extra)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def run(r: aioredis.Redis, keys: Keys, settings: Settings,
              checks: list[tuple[str, str, dict[str, Any]]], timeout_ms: int = 800,
              resolver: Resolver | None = None) -> dict[str, CheckResult]:
    dues = [check_due(mid, kind, spec, timeout_ms=timeout_ms) for mid, kind, spec in checks]
    return await run_checks(r, keys, dues, settings, resolver=resolver)


def denied(got: dict[str, CheckResult]) -> set[str]:
    return {mid for mid, result in got.items()
            if (result.outcome, result.error_kind) == ("error", "denied")}


async def test_a_tcp_monitor_cannot_command_vigils_own_redis(r, keys, redis_url, postgres_dsn):
    port = port_of(redis_url)
    # 0.0.0.0 and the IPv4-mapped form reach a redis-server bound to 127.0.0.1 as well.
    hosts = ["127.0.0.1", "localhost", "0.0.0.0", "::ffff:127.0.0.1", "127.0.0.2"]
    got = await run(r, keys, own(redis_url, postgres_dsn), [
        (f"tcp-{host}", "tcp", {"host": host, "port": port, "send_hex": SEND.encode().hex(),
                                 "expect": "+OK"})
        for host in hosts])
    assert await r.exists("viatcp") == 0
    assert denied(got) == set(got), {m: g.error for m, g in got.items()}
    assert got["tcp-127.0.0.1"].error == (f"denied: 127.0.0.1:{port} {OWN_REDIS}; allow it "
                                          f"with VIGIL_ALLOW_TARGETS=127.0.0.1:{port}")
    assert (got["tcp-localhost"].error or "").startswith(
        "denied: localhost resolves to 127.0.0.1; ")


async def test_a_cluster_urls_seed_node_is_vigils_own_redis(r, keys, redis_url, postgres_dsn):
    """VIGIL_REDIS_URL=redis+cluster://host:port names a cluster by its seed node: that node is
    denied as the plain URL's server is (the executor failed to start on such a URL)."""
    port = port_of(redis_url)
    settings = own(f"redis+cluster://127.0.0.1:{port}", postgres_dsn)
    got = await run(r, keys, settings, [("tcp", "tcp", {"host": "127.0.0.1", "port": port})])
    assert got["tcp"].error == (f"denied: 127.0.0.1:{port} {OWN_REDIS}; allow it "
                                f"with VIGIL_ALLOW_TARGETS=127.0.0.1:{port}")


async def test_probes_of_vigils_own_servers_are_denied(r, keys, pool, redis_url, postgres_dsn,
                                                       monkeypatch):
    socket_dir = postgres_dsn.split("host=", 1)[1]
    parent, name = socket_dir.rstrip("/").rsplit("/", 1)
    # A monitor may name the executor's own variables: their servers are denied all the same.
    monkeypatch.setenv("VIGIL_REDIS_URL", redis_url)
    monkeypatch.setenv("VIGIL_POSTGRES_DSN", postgres_dsn)
    async with login_role(pool, "vigil_guard_plain") as role:
        got = await run(r, keys, own(redis_url, postgres_dsn), [
            ("redis", "redis", {"url": redis_url}),
            ("redis-env", "redis", {"url_env": "VIGIL_REDIS_URL"}),
            ("pg-superuser", "postgres", {"dsn": postgres_dsn}),
            ("pg-env", "postgres", {"dsn_env": "VIGIL_POSTGRES_DSN"}),
            ("pg-plain", "postgres", {"dsn": socket_dsn(postgres_dsn, role)}),
            # The same socket by another path: compared as real paths.
            ("pg-dotdot", "postgres", {"dsn": f"postgresql://{role}@/postgres?host="
                                              f"{parent}/{name}/../{name}"}),
        ])
    assert denied(got) == set(got), {m: g.error for m, g in got.items()}
    assert OWN_REDIS in (got["redis"].error or "")
    assert OWN_POSTGRES in (got["pg-plain"].error or "")
    assert "allow it with VIGIL_ALLOW_TARGETS=unix:" in (got["pg-plain"].error or "")


async def test_a_name_is_checked_for_every_address_it_resolves_to(r, keys, redis_url,
                                                                  postgres_dsn):
    port = port_of(redis_url)
    hosts = Hosts({"cache.example.test": ["127.0.0.1"],
                   # A rebinding answer mixes a harmless address with the one it is after.
                   "mixed.example.test": ["192.0.2.1", "127.0.0.1"],
                   "fine.example.test": ["127.0.0.1"]})
    async with RawServer(silent()) as elsewhere:
        got = await run(r, keys, own(redis_url, postgres_dsn), [
            ("tcp", "tcp", {"host": "cache.example.test", "port": port}),
            ("http", "http", {"url": f"http://cache.example.test:{port}/"}),
            ("tls", "tls", {"host": "cache.example.test", "port": port}),
            ("redis", "redis", {"url": f"redis://cache.example.test:{port}/0"}),
            ("pg", "postgres", {"dsn": f"postgresql://u@cache.example.test:{port}/db"}),
            ("mixed", "tcp", {"host": "mixed.example.test", "port": port}),
            # Allowed: each reaches the server by the checked address alone.
            ("tcp-fine", "tcp", {"host": "fine.example.test", "port": elsewhere.port}),
            ("redis-fine", "redis", {"url": f"redis://fine.example.test:{elsewhere.port}/0"}),
            ("pg-fine", "postgres", {"dsn": f"postgresql://u@fine.example.test:"
                                            f"{elsewhere.port}/db"}),
        ], resolver=hosts)
        await elsewhere.wait_idle()
    assert denied(got) == {"tcp", "http", "tls", "redis", "pg", "mixed"}
    assert (f"denied: cache.example.test resolves to 127.0.0.1; 127.0.0.1:{port} {OWN_REDIS}"
            in (got["redis"].error or ""))
    assert got["tcp-fine"].outcome == "up"
    assert (got["redis-fine"].error_kind, got["pg-fine"].error_kind) == ("timeout", "timeout")
    assert len(elsewhere.seen) == 3


async def test_a_dns_check_cannot_query_a_denied_nameserver(r, keys, redis_url, postgres_dsn):
    zone = await DnsServer().start()
    try:
        settings = own(redis_url, postgres_dsn,
                       deny_targets=(Target.parse(f"127.0.0.1:{zone.port}"),))
        got = await run(r, keys, settings, [
            ("own-redis", "dns", {"name": "www.example.test", "nameserver": "127.0.0.1",
                                  "port": port_of(redis_url)}),
            ("listed", "dns", {"name": "www.example.test", "nameserver": "127.0.0.1",
                               "port": zone.port}),
        ])
    finally:
        zone.stop()
    assert denied(got) == {"own-redis", "listed"}
    assert "is in VIGIL_DENY_TARGETS" in (got["listed"].error or "")
    assert zone.queries == 0


async def test_cloud_metadata_addresses_are_denied(r, keys, redis_url, postgres_dsn):
    got = await run(r, keys, own(redis_url, postgres_dsn), [
        ("aws", "http", {"url": "http://169.254.169.254/latest/meta-data/"}),
        ("aws-mapped", "http", {"url": "http://[::ffff:169.254.169.254]/latest/meta-data/"}),
        ("aws-v6", "http", {"url": "http://[fd00:ec2::254]/latest/meta-data/"}),
        ("alibaba", "http", {"url": "http://100.100.100.200/latest/meta-data/"}),
        ("link-local-v6", "tcp", {"host": "fe80::1", "port": 80}),
        ("tcp", "tcp", {"host": "169.254.169.254", "port": 80}),
        ("tls", "tls", {"host": "169.254.169.254"}),
        ("icmp", "icmp", {"host": "169.254.169.254", "count": 1}),
        ("dns", "dns", {"name": "example.com", "nameserver": "169.254.169.254"}),
    ])
    assert denied(got) == set(got), {m: g.error for m, g in got.items()}
    assert "link-local (169.254.0.0/16)" in (got["aws-mapped"].error or "")


async def test_deny_targets_extend_the_list_and_allow_targets_punch_holes(r, keys, redis_url,
                                                                           postgres_dsn):
    port = port_of(redis_url)
    async with RawServer(answer(OK)) as listed:
        redirect = (f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{listed.port}/\r\n"
                    "Content-Length: 0\r\n\r\n").encode()
        async with RawServer(answer(redirect)) as hop:
            settings = own(redis_url, postgres_dsn,
                           deny_targets=(Target.parse(f"127.0.0.1:{listed.port}"),),
                           allow_targets=(Target.parse(f"127.0.0.1:{port}"),))
            got = await run(r, keys, settings, [
                ("listed", "http", {"url": listed.url()}),
                ("redirected", "http", {"url": hop.url(), "follow_redirects": True}),
                # Operators who allow their own Redis get it checked as any other target.
                ("own-tcp", "tcp", {"host": "127.0.0.1", "port": port, "send": "PING\r\n",
                                    "expect": "+PONG"}),
                ("own-redis", "redis", {"url": redis_url}),
            ])
    assert denied(got) == {"listed", "redirected"}
    assert listed.seen == []
    assert (got["own-tcp"].outcome, got["own-redis"].outcome) == ("up", "up")


async def test_over_tls_the_probe_checks_the_certificate_for_the_name(r, keys, redis_url,
                                                                     postgres_dsn, tmp_path,
                                                                     monkeypatch):
    """The socket goes to the checked address; the certificate (issued for localhost and
    127.0.0.1) is checked for the URL's name, so a name it does not carry fails."""
    with certificates() as (ca, ca_path), tls_redis(tmp_path / "redis", ca, ca_path) as url:
        # The system trust store, as the probe reads it (no CA file in a monitor's URL).
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
        parts = urlsplit(url)
        hosts = Hosts({"localhost": ["127.0.0.1"], "cache.example.test": ["127.0.0.1"]})
        got = await run(r, keys, own(redis_url, postgres_dsn), [
            (name, "redis", {"url": f"rediss://{parts.username}:{parts.password}@{name}:"
                                    f"{parts.port}/0"})
            for name in ("localhost", "cache.example.test")], resolver=hosts)
    assert got["localhost"].outcome == "up", got["localhost"].error
    assert got["cache.example.test"].error_kind == "connect"
    assert "Hostname mismatch" in (got["cache.example.test"].error or "")
