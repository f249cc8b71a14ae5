"""The real servers a pod under podman talks to, and the chart values that point it at them.

Redis, the Auth0 emulator (on the host's loopback, which a pod reaches as HOST_FROM_POD) and a
database of its own on the session's PostgreSQL; the Secrets the chart's pods read; and the
migration Job's pod, run once from the image as the chart's hook runs it. Shared by the pod tests
(tests/deploy/test_pods.py, the chart's pod templates) and the Revision pod test
(tests/cluster/test_revision_pod.py, the template Knative's controller makes of them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from userapi.emulator import DEV_AUDIENCE, DEV_CLIENT_ID, DEV_CLIENT_SECRET

from harness.emulator import EmulatorHandle
from harness.podman import Podman
from harness.pods import HOST_FROM_POD, job_pod_spec, run_pod
from harness.postgres import PASSWORD, ROLE, PostgresServer
from harness.processes import USERAPI, ServiceProcess, free_port
from harness.redis_server import RedisServer
from harness.userapi import SHARED_CACHE_KEY

EVENTS_SECRET = "pod-test-events-secret-0123456789"
# The image the pod tests build (as `make image` does) into their podman engine.
TAG = "localhost/userapi:pod-test"


def spec_of(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@dataclass
class PodBackends:
    emulator: EmulatorHandle
    redis: RedisServer
    postgres: PostgresServer
    database: str

    @property
    def values(self) -> dict[str, Any]:
        """Chart values: the image built for the tests, and every backend at HOST_FROM_POD."""
        repository, tag = TAG.rsplit(":", 1)
        return {
            "image": {"repository": repository, "tag": tag},
            # The emulator answers over http: a local release's switch, which the chart refuses
            # to render an http Auth0 domain without.
            "local": True,
            "auth0": {
                "domain": self.emulator.public_url,
                "audience": DEV_AUDIENCE,
                "clientId": DEV_CLIENT_ID,
            },
            "redis": {"url": f"redis://{HOST_FROM_POD}:{self.redis.port}/0"},
            "database": {
                "host": HOST_FROM_POD,
                "port": self.postgres.port,
                "name": self.database,
                "user": ROLE,
            },
        }

    @property
    def secrets(self) -> dict[str, dict[str, str]]:
        """The Secrets the chart expects to exist (the chart never holds secret values)."""
        return {
            "userapi-auth0": {"client-secret": DEV_CLIENT_SECRET, "events-secret": EVENTS_SECRET},
            "userapi-postgres": {"password": PASSWORD},
            "userapi-shared-cache": {"shared-cache-key": SHARED_CACHE_KEY},
        }

    def migrate(self, engine: Podman, objects: list[dict[str, Any]]) -> None:
        """The chart's migration Job, its pod run once from the image; fails unless it exits 0."""
        job = spec_of(objects, "Job", "demo-migrate")
        migrate = run_pod(engine, "migrate", job_pod_spec(job), secrets=self.secrets)
        try:
            code = migrate.wait_exited("migrate", timeout=120)
            assert code == 0, migrate.logs()
        finally:
            migrate.remove()


@contextlib.contextmanager
def pod_backends(postgres: PostgresServer) -> Iterator[PodBackends]:
    redis = RedisServer()
    port = free_port()
    public = f"http://{HOST_FROM_POD}:{port}"
    process = ServiceProcess(
        [USERAPI, "emulator", "--port", str(port), "--base-url", public], env={}
    )
    local = f"http://127.0.0.1:{port}"
    emulator = EmulatorHandle(local, process, public_url=public)
    try:
        process.wait_healthy(f"{local}/.well-known/jwks.json", timeout=30)
        yield PodBackends(emulator, redis, postgres, postgres.create_database())
    finally:
        emulator.close()
        redis.stop()
