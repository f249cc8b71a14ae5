"""TLS to PostgreSQL as the chart renders it, against a real PostgreSQL with a test CA: the
PgBouncer sidecar (server_tls_sslmode, server_tls_ca_file) and the migration Job's URL (sslmode,
sslrootcert, read by asyncpg as the app reads it) connect to the genuine server and refuse an
impostor on the path, which the old settings (`prefer`, the default of both) let through."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harness.postgres import PASSWORD, ROLE, PostgresServer, run_psql
from harness.processes import (
    HOST,
    SERVICE_USER,
    as_service_user,
    binary,
    free_port,
    new_workdir,
    spawn,
    stop_process,
    wait_for_port,
)
from tests.support.chart import render

pytestmark = pytest.mark.integration

CA_PATH = "/etc/userapi/database-ca/ca.crt"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)  # fmt: skip


def make_server_cert(directory: Path, name: str, ca: str, san: str) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=postgres",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            cwd=directory)  # fmt: skip


@pytest.fixture(scope="module")
def pki() -> Path:
    directory = new_workdir("pg-tls", service_user=True)
    make_ca(directory, "ca")
    make_ca(directory, "impostor-ca")  # an attacker's: any certificate it likes, its own CA
    make_server_cert(directory, "genuine", "ca", f"IP:{HOST}")
    make_server_cert(directory, "impostor", "impostor-ca", f"IP:{HOST}")
    # Signed by the right CA, for another host: verify-ca takes it, verify-full does not.
    make_server_cert(directory, "elsewhere", "ca", "DNS:db.elsewhere.example")
    for path in directory.iterdir():
        path.chmod(0o600 if path.suffix == ".key" else 0o644)
        if as_service_user():
            shutil.chown(path, SERVICE_USER, SERVICE_USER)
    return directory


@pytest.fixture(scope="module")
def tls_postgres(pki: Path) -> Iterator[PostgresServer]:
    _copy_serving(pki, "genuine")
    server = PostgresServer(
        admin_dsn=None,
        settings={"ssl": "on", "ssl_cert_file": str(pki / "serving.crt"),
                  "ssl_key_file": str(pki / "serving.key")},
    )  # fmt: skip
    yield server
    server.stop()


def _copy_serving(pki: Path, name: str) -> None:
    for suffix in ("crt", "key"):
        shutil.copy2(pki / f"{name}.{suffix}", pki / f"serving.{suffix}")
        if as_service_user():
            shutil.chown(pki / f"serving.{suffix}", SERVICE_USER, SERVICE_USER)


def serve_certificate(server: PostgresServer, pki: Path, name: str) -> None:
    """What the client at the other end sees: the genuine server, or one on the path (the
    server reloads its certificate on a configuration reload)."""
    _copy_serving(pki, name)
    assert run_psql(server.admin_dsn(), "SELECT pg_reload_conf()").returncode == 0
    # The reload is a signal to the postmaster: wait until new connections see the certificate.
    wanted = (pki / f"{name}.crt").read_text().strip()
    deadline = time.monotonic() + 10
    while _served_certificate(server) != wanted:
        assert time.monotonic() < deadline, (
            f"PostgreSQL still serves another certificate than {name}"
        )
        time.sleep(0.1)


def _served_certificate(server: PostgresServer) -> str:
    address = f"{server.host}:{server.port}"
    shown = subprocess.run(
        ["openssl", "s_client", "-starttls", "postgres", "-connect", address],
        input="", capture_output=True, text=True, timeout=20, check=False,
    ).stdout  # fmt: skip
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if begin not in shown:
        return ""
    return begin + shown.split(begin, 1)[1].split(end, 1)[0] + end


def rendered(server: PostgresServer, mode: str) -> list[dict[str, Any]]:
    tls = {"mode": mode, "caSecret": "postgres-ca"} if mode.startswith("verify") else {"mode": mode}
    return render({"database": {"host": server.host, "port": server.port,
                                "name": server.database, "user": ROLE, "tls": tls}})  # fmt: skip


@contextlib.contextmanager
def sidecar(server: PostgresServer, pki: Path, mode: str) -> Iterator[str]:
    """The rendered pgbouncer.ini, its CA file and port moved here; yields a DSN through it."""
    objects = rendered(server, mode)
    ini = next(o for o in objects if o["metadata"]["name"] == "demo-pgbouncer")
    text: str = ini["data"]["pgbouncer.ini"]
    if mode.startswith("verify"):
        assert f"server_tls_ca_file = {CA_PATH}" in text
    assert f"server_tls_sslmode = {mode}" in text
    port = free_port()
    workdir = new_workdir("pg-tls-sidecar", service_user=True)
    (workdir / "userlist.txt").write_text(f'"{ROLE}" "{PASSWORD}"\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(
        text.replace("listen_port = 6432", f"listen_port = {port}")
        .replace("/tmp/userlist.txt", str(workdir / "userlist.txt"))
        .replace(CA_PATH, str(pki / "ca.crt"))
    )
    for path in workdir.iterdir():
        if as_service_user():
            shutil.chown(path, SERVICE_USER, SERVICE_USER)
    process = spawn([binary("pgbouncer"), str(config)], workdir / "log", service_user=True,
                    cwd=workdir)  # fmt: skip
    try:
        wait_for_port(HOST, port, 15, process)
        yield f"postgresql://{ROLE}:{PASSWORD}@{HOST}:{port}/{server.database}"
    finally:
        stop_process(process)


def through_sidecar(
    server: PostgresServer, pki: Path, mode: str
) -> subprocess.CompletedProcess[str]:
    with sidecar(server, pki, mode) as dsn:
        return run_psql(dsn + "?sslmode=disable", "SELECT 'reached'")


def migration_job_connects(server: PostgresServer, pki: Path, mode: str) -> bool:
    job = next(o for o in rendered(server, mode) if o["kind"] == "Job")
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    url = str(env["DATABASE_URL"]).replace(CA_PATH, str(pki / "ca.crt"))
    assert f"sslmode={mode}" in url

    async def connect() -> bool:
        try:
            connection = await asyncpg.connect(url, password=PASSWORD, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        try:
            return bool(
                await connection.fetchval(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
            )
        finally:
            await connection.close()

    return asyncio.run(connect())


def test_verify_full_reaches_the_genuine_server_and_refuses_an_impostor(
    tls_postgres: PostgresServer, pki: Path
) -> None:
    serve_certificate(tls_postgres, pki, "genuine")
    assert through_sidecar(tls_postgres, pki, "verify-full").stdout.strip() == "reached"
    assert migration_job_connects(tls_postgres, pki, "verify-full")

    serve_certificate(tls_postgres, pki, "impostor")
    # The old settings: PgBouncer's and asyncpg's `prefer` take whatever certificate is shown.
    assert through_sidecar(tls_postgres, pki, "prefer").stdout.strip() == "reached"
    assert migration_job_connects(tls_postgres, pki, "prefer")
    refused = through_sidecar(tls_postgres, pki, "verify-full")
    assert refused.returncode != 0
    assert "reached" not in refused.stdout
    assert not migration_job_connects(tls_postgres, pki, "verify-full")


def test_verify_full_also_checks_the_name_verify_ca_only_the_ca(
    tls_postgres: PostgresServer, pki: Path
) -> None:
    serve_certificate(tls_postgres, pki, "elsewhere")
    try:
        assert through_sidecar(tls_postgres, pki, "verify-ca").stdout.strip() == "reached"
        assert through_sidecar(tls_postgres, pki, "verify-full").returncode != 0
        assert migration_job_connects(tls_postgres, pki, "verify-ca")
        assert not migration_job_connects(tls_postgres, pki, "verify-full")
    finally:
        serve_certificate(tls_postgres, pki, "genuine")


def test_a_verifying_mode_without_a_ca_does_not_render() -> None:
    from helm_python import HelmError

    with pytest.raises(HelmError, match="give its CA"):
        render({"database": {"tls": {"mode": "verify-full"}}})
    with pytest.raises(HelmError, match="not both"):
        render({"database": {"tls": {"caSecret": "a", "caConfigMap": "b"}}})
