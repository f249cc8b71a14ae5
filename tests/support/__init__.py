"""Real servers for the tests: redis-server, PostgreSQL and PgBouncer on free ports, started and
stopped by the tests themselves (never the machine's own services), plus userapi processes."""

from tests.support.processes import (
    EXTERNAL_POSTGRES_ENV,
    PASSWORD,
    ROLE,
    PgBouncer,
    PostgresServer,
    RedisServer,
    ServiceProcess,
    binary,
    free_port,
    install_signal_cleanup,
    postgres_bindir,
    run_psql,
    spawn,
    stop_all,
    stop_process,
    userapi_executable,
    wait_for_http,
    wait_for_port,
)

__all__ = [
    "EXTERNAL_POSTGRES_ENV",
    "PASSWORD",
    "ROLE",
    "PgBouncer",
    "PostgresServer",
    "RedisServer",
    "ServiceProcess",
    "binary",
    "free_port",
    "install_signal_cleanup",
    "postgres_bindir",
    "run_psql",
    "spawn",
    "stop_all",
    "stop_process",
    "userapi_executable",
    "wait_for_http",
    "wait_for_port",
]
