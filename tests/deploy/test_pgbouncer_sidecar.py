"""The chart's PgBouncer sidecar, run for real: the rendered container command and
pgbouncer.ini, with only their paths and port moved to this machine, in front of the test
PostgreSQL. A password with quotes, dollars and backslashes must log in through it."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import pytest

from harness.postgres import PostgresServer, run_psql
from harness.processes import HOST, binary, free_port, new_workdir, spawn, wait_for_port
from tests.support.chart import knative_services, render

pytestmark = pytest.mark.integration

# Everything a shell or the userlist's quoting could trip on.
AWKWARD_PASSWORD = "a \"quoted\" pa$$word with 'single' quotes, \\ and $(spaces)"


def test_the_rendered_sidecar_logs_in_with_a_password_full_of_quotes(
    postgres_server: PostgresServer,
) -> None:
    role = f"sidecar_{secrets.token_hex(4)}"
    literal = AWKWARD_PASSWORD.replace("'", "''")
    created = run_psql(
        postgres_server.admin_dsn(), f"CREATE ROLE {role} LOGIN PASSWORD '{literal}'"
    )
    assert created.returncode == 0, created.stderr

    port = free_port()
    workdir = new_workdir("sidecar", service_user=True)
    objects = render(
        {
            "database": {
                "host": postgres_server.host,
                "port": postgres_server.port,
                "name": postgres_server.database,
                "user": role,
            }
        }
    )
    ini = next(o for o in objects if o["metadata"]["name"] == "demo-pgbouncer")["data"][
        "pgbouncer.ini"
    ]
    sidecar = knative_services(objects)["get-user"]["spec"]["template"]["spec"]["containers"][1]
    (command,) = sidecar["args"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["DATABASE_USER"] == role
    assert "DATABASE_PASSWORD" in env  # from the Secret in a pod; given directly here

    config = workdir / "pgbouncer.ini"
    config.write_text(
        ini.replace("listen_port = 6432", f"listen_port = {port}").replace(
            "/tmp/userlist.txt", str(workdir / "userlist.txt")
        )
    )
    command = (
        command.replace("/tmp/userlist.txt", str(workdir / "userlist.txt"))
        .replace("/etc/pgbouncer/pgbouncer.ini", str(config))
        .replace("exec pgbouncer ", f"exec {binary('pgbouncer')} ")
    )
    log = workdir / "sidecar.log"
    process = spawn(
        ["/bin/sh", "-c", command],
        log,
        service_user=True,
        env={"PATH": "/usr/bin:/bin", "DATABASE_USER": role, "DATABASE_PASSWORD": AWKWARD_PASSWORD},
        cwd=workdir,
    )
    try:
        wait_for_port(HOST, port, 15, process)
        dsn = f"postgresql://{role}:{quote(AWKWARD_PASSWORD, safe='')}@{HOST}:{port}/"
        result = run_psql(dsn + postgres_server.database, "SELECT current_user")
        assert result.returncode == 0, result.stderr + _text(log)
        assert result.stdout.strip() == role
        wrong = f"postgresql://{role}:wrong@{HOST}:{port}/{postgres_server.database}"
        assert run_psql(wrong, "SELECT 1").returncode != 0
    finally:
        process.terminate()
        process.wait(10)
        run_psql(postgres_server.admin_dsn(), f"DROP ROLE IF EXISTS {role}")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
