"""Real servers for the tests: redis-server, PostgreSQL and PgBouncer on free ports, started and
stopped by the tests themselves (never the machine's own services), plus userapi processes."""

from tests.support.processes import (
    PgBouncer,
    PostgresServer,
    RedisServer,
    ServiceProcess,
    free_port,
    stop_all,
    wait_for_http,
    wait_for_port,
)

__all__ = [
    "PgBouncer",
    "PostgresServer",
    "RedisServer",
    "ServiceProcess",
    "free_port",
    "stop_all",
    "wait_for_http",
    "wait_for_port",
]
