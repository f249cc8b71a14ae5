"""Session-wide real servers, each started on a free port the first time a test needs it.

Set USERAPI_TEST_POSTGRES_DSN to an existing server's admin DSN to skip initdb (see
harness/postgres.py); Redis and PgBouncer are always our own.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from harness import images as image_tool
from harness import podman as podman_harness
from harness.pgbouncer import PgBouncer
from harness.postgres import PostgresServer
from harness.processes import install_signal_cleanup, stop_all
from harness.redis_server import RedisServer
from tests.support.pod_backends import TAG


def pytest_configure(config: pytest.Config) -> None:
    install_signal_cleanup()


CLUSTER_TESTS = "tests/cluster/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs on two pytest-xdist workers; this says what stays together. The cluster
    tests share two control planes, one with a real node whose teardown test runs right after
    its last user (tests/cluster/conftest.py): all of them go to one worker, in order, and
    mostly wait on Kubernetes there while the other worker runs the rest. Every other module
    stays whole on one worker, so that its module-scoped servers start once. (A scheduler, not
    xdist_group marks: pytest 9.2 drops the node id suffix those rely on, pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ClusterTogether(LoadScopeScheduling):  # type: ignore[misc]  # untyped base
        def _split_scope(self, nodeid: str) -> str:
            return CLUSTER_TESTS if nodeid.startswith(CLUSTER_TESTS) else nodeid.split("::")[0]

    return ClusterTogether(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The scheduler goes by path: the cluster tests are exactly those under tests/cluster/.
    for item in items:
        if item.nodeid.startswith(CLUSTER_TESTS) != bool(item.get_closest_marker("cluster")):
            raise pytest.UsageError(f"{item.nodeid}: cluster tests live in {CLUSTER_TESTS}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()  # nothing outlives the run, even when a fixture's teardown did not happen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    # A test that failed between redis_server.kill() and .start() (or pause/resume) must not
    # leave a dead session server behind for every later test to trip over.
    for value in (getattr(item, "funcargs", None) or {}).values():
        if isinstance(value, RedisServer | PgBouncer):
            value.ensure_running()
    return (yield)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    """Transaction mode, default_pool_size 5, max_db_connections 10: the sidecar's settings."""
    bouncer = PgBouncer(postgres_server, pool_size=5, max_db_connections=10)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer, pgbouncer: PgBouncer) -> str:
    """A fresh, empty database for each test module, reached through PgBouncer."""
    return pgbouncer.dsn(postgres_server.create_database())


@pytest.fixture(scope="session")
def podman_engine() -> Iterator[podman_harness.Podman]:
    """One private podman engine for the session's pod tests (tests/deploy/test_pods.py,
    tests/cluster/test_revision_pod.py), so the image is built once."""
    missing = podman_harness.available()
    assert missing is None, missing  # never a skip: `make test` installs podman (bootstrap)
    with podman_harness.Podman() as podman:
        yield podman


@pytest.fixture(scope="session")
def pod_image(podman_engine: podman_harness.Podman) -> image_tool.Built:
    """The image built from the Dockerfile as `make image` builds it, with the PgBouncer
    sidecar's image (stand-ins for both bases when no registry answers)."""
    return podman_engine.build_image(TAG, with_pgbouncer=True)
