"""A Revision's pod as Knative's controller makes it, run under podman, queue-proxy in front.

The chart's update-user Service goes to the real API server; Knative's real controller turns it
into a Deployment whose pod template holds the app, the PgBouncer sidecar and the queue-proxy it
injects. That template, read back from the API server, runs under podman (harness/pods.py) with a
queue-proxy image built from the same Knative module as the controller (controlplane/), against
real Redis, PostgreSQL and the Auth0 emulator. Only the ports queue-proxy declares are published,
so every request goes through queue-proxy as the activator's and the ingress's do on a cluster.

Checked, with the kubelet's part played by the harness (podman 4.3 runs no probes or hooks):
- readiness: queue-proxy's probe, which queue-proxy answers by running the app's own readiness
  probe (SERVING_READINESS_PROBE) against the app; it fails while the app does not answer;
- a request through queue-proxy's port reaches the app and the database, errors stay the app's;
- SIGTERM: the app's preStop hook waits on queue-proxy's /wait-for-drain, queue-proxy reports
  not-ready while it drains and still serves; no request in flight or sent during the drain is
  lost, and every container exits 0 within the grace period Knative set.

What this cannot show: the activator, the autoscaler, an ingress and scale from zero.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from userapi.domain.users import user_path

from harness import images as image_tool
from harness.cluster import QUEUE_IMAGE, ControlPlane
from harness.podman import Podman
from harness.pods import Pod, run_pod
from tests.support.chart import render
from tests.support.cluster import OFFLINE_IMAGES
from tests.support.pod_backends import TAG, PodBackends, pod_backends

pytestmark = [pytest.mark.cluster, pytest.mark.pods]

ENDPOINT = "update-user"
NAMESPACE = "revision-pod"
QUEUE_PORT = 8012  # queue-proxy's HTTP/1 serving port (knative.dev/serving pkg/networking)
ADMIN = "auth0|revisionpodadmin00000000"
PERMISSIONS = ["read:users", "update:users"]
# queue-proxy drains for this long after its last request before it exits (drainSleepDuration
# in knative.dev/serving pkg/queue/sharedmain/main.go), and the app's preStop hook waits for it.
DRAIN_QUIET_SECONDS = 30
IN_FLIGHT = 6
AUTH0_LATENCY_MS = 1500
LATE_REQUEST_SECONDS = 3


@dataclass
class RevisionPod:
    pod: Pod
    spec: dict[str, Any]  # the Deployment's pod template, as Knative's controller made it
    backends: PodBackends

    @property
    def url(self) -> str:
        return self.pod.url(QUEUE_PORT)

    def admin(self) -> str:
        return self.backends.emulator.token(ADMIN, PERMISSIONS)

    def user(self) -> dict[str, Any]:
        return self.backends.emulator.create_user(
            f"revision-{secrets.token_hex(4)}@example.com", name="Revision Person"
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.pod.probe("queue-proxy"):
            assert self.pod.running("app"), self.pod.logs()
            assert self.pod.running("queue-proxy"), self.pod.logs()
            assert time.monotonic() < deadline, f"never ready\n{self.pod.logs()}"
            time.sleep(0.2)


def _wait_for(plane: ControlPlane, kind: str, name: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = plane.kubectl("get", "-n", NAMESPACE, kind, name, "-o", "json", check=False)
        if found.returncode == 0:
            return yaml.safe_load(found.stdout)
        assert time.monotonic() < deadline, f"{kind} {name} never appeared: {found.stderr}"
        time.sleep(1)


@pytest.fixture(scope="module")
def revision(
    control_plane: ControlPlane,
    podman_engine: Podman,
    pod_image: Any,
    postgres_server: Any,
) -> Iterator[RevisionPod]:
    # The images under the names the Revision uses: *.local names, which Knative never looks up
    # in a registry; queue-proxy built from the module the controller was built from.
    podman_engine("tag", TAG, "{repository}:{tag}".format(**OFFLINE_IMAGES["image"]))
    sidecar = pod_image.bases[image_tool.pgbouncer_image()]  # a stand-in has a name of its own
    podman_engine("tag", sidecar, OFFLINE_IMAGES["pgbouncer"]["image"])
    queue_image = QUEUE_IMAGE.format(version=control_plane.knative_version)
    podman_engine.build_from_binary(queue_image, control_plane.binary("queue"))
    with pod_backends(postgres_server) as backends:
        objects = render({**backends.values, **OFFLINE_IMAGES})
        for obj in objects:
            obj["metadata"]["namespace"] = NAMESPACE
        control_plane.kubectl("create", "namespace", NAMESPACE)
        pod: Pod | None = None
        try:
            control_plane.kubectl(
                "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects)
            )
            deployment = _wait_for(
                control_plane, "deployments.apps", f"{ENDPOINT}-00001-deployment"
            )
            spec = deployment["spec"]["template"]["spec"]
            backends.migrate(podman_engine, objects)
            configmaps = {
                o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"
            }
            pod = run_pod(
                podman_engine,
                ENDPOINT,
                spec,
                secrets=backends.secrets,
                configmaps=configmaps,
                namespace=NAMESPACE,
            )
            revision = RevisionPod(pod, spec, backends)
            revision.wait_ready()
            yield revision
        finally:
            if pod is not None:
                pod.remove()
            control_plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_the_pod_is_the_one_knative_made(
    revision: RevisionPod, control_plane: ControlPlane
) -> None:
    containers = {c["name"]: c for c in revision.spec["containers"]}
    assert list(containers) == ["app", "pgbouncer", "queue-proxy"]
    queue = containers["queue-proxy"]
    assert queue["image"] == QUEUE_IMAGE.format(version=control_plane.knative_version)
    # The app's readiness probe moved into queue-proxy, which runs it against the app itself.
    assert "readinessProbe" not in containers["app"]
    moved = json.loads(
        next(e["value"] for e in queue["env"] if e["name"] == "SERVING_READINESS_PROBE")
    )
    assert moved["httpGet"]["path"] == "/healthz", moved
    # Only queue-proxy's ports reach the host (8012 serving, 8022 the admin port the preStop
    # hooks call): the app's 8080 is not published.
    assert set(revision.pod.ports) == {QUEUE_PORT, 8022}, revision.pod.ports
    assert revision.pod.running("queue-proxy")
    # queue-proxy runs as ko lays out Knative's images: non-root, no capabilities.
    status = revision.pod.status("queue-proxy")
    assert status["Uid"].split()[0] != "0"
    assert int(status["CapEff"], 16) == 0


def test_readiness_passes_through_queue_proxy_to_the_app(revision: RevisionPod) -> None:
    assert revision.pod.probe("queue-proxy")
    # queue-proxy runs the app's own readiness probe: with the app frozen, it reports not ready.
    revision.pod.podman("pause", revision.pod.containers["app"])
    try:
        deadline = time.monotonic() + 30
        while revision.pod.probe("queue-proxy"):
            assert time.monotonic() < deadline, "queue-proxy stayed ready with the app frozen"
            time.sleep(0.2)
    finally:
        revision.pod.podman("unpause", revision.pod.containers["app"])
    revision.wait_ready(timeout=30)


def test_a_request_through_queue_proxy_reaches_the_app_and_the_database(
    revision: RevisionPod,
) -> None:
    user = revision.user()
    path = user_path(user["user_id"])
    auth = {"Authorization": f"Bearer {revision.admin()}"}
    with httpx.Client(base_url=revision.url, timeout=30) as client:
        response = client.patch(path, json={"name": "Through Queue"}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "Through Queue"
        # The app's JSON errors come back through queue-proxy unchanged.
        refused = client.patch(path, json={"name": "x"})
        assert refused.status_code == 401
        assert set(refused.json()) == {"error", "message", "request_id"}
    # The app wrote its audit row through the PgBouncer sidecar.
    audit = revision.backends.postgres.psql(
        f"SELECT endpoint FROM audit_log WHERE target_user_id = '{user['user_id']}'",
        database=revision.backends.database,
    ).stdout.split()
    assert audit == [ENDPOINT], audit


# --- shutdown: last, it ends the pod -------------------------------------------------------------


def test_sigterm_drains_through_queue_proxy_and_loses_no_request(revision: RevisionPod) -> None:
    pod = revision.pod
    auth = {"Authorization": f"Bearer {revision.admin()}"}
    users = [revision.user() for _ in range(IN_FLIGHT + 1)]
    client = httpx.Client(base_url=revision.url, timeout=90)
    warm = client.patch(user_path(users[0]["user_id"]), json={"name": "Warm"}, headers=auth)
    assert warm.status_code == 200, warm.text  # the app's pool holds its connection

    def update(user: dict[str, Any], name: str) -> int:
        path = user_path(user["user_id"])
        return client.patch(path, json={"name": name}, headers=auth).status_code

    exits: dict[str, tuple[int, float]] = {}
    failure: list[BaseException] = []

    def terminate() -> None:
        try:
            exits.update(pod.terminate())
        except BaseException as exc:
            failure.append(exc)

    revision.backends.emulator.latency(AUTH0_LATENCY_MS)
    try:
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            in_flight = [pool.submit(update, u, "In Flight") for u in users[:IN_FLIGHT]]
            time.sleep(AUTH0_LATENCY_MS / 3000)  # all sent, none answered yet
            assert not any(f.done() for f in in_flight)
            stopper = threading.Thread(target=terminate)
            stopper.start()
            # While it drains, queue-proxy tells the kubelet it is not ready (so the endpoint
            # is taken out of the Service) and still serves what the network sends meanwhile.
            deadline = time.monotonic() + 10
            while pod.probe("queue-proxy"):
                assert time.monotonic() < deadline, "queue-proxy stayed ready after SIGTERM"
                time.sleep(0.2)
            statuses = [f.result(timeout=90) for f in in_flight]
            # Sent once those are answered, seconds into the drain (an app that had its SIGTERM
            # at once would be gone by now): the kubelet's order keeps it served.
            time.sleep(LATE_REQUEST_SECONDS)
            late_status = update(users[IN_FLIGHT], "During Drain")
            stopper.join(timeout=120)
    finally:
        revision.backends.emulator.latency(0)
        client.close()
    assert not failure, failure
    assert statuses == [200] * IN_FLIGHT, pod.logs()
    assert late_status == 200, pod.logs()
    # Knative gives the app and the sidecar a preStop hook that waits on queue-proxy's drain.
    assert pod.hooks == {"app": "ok", "pgbouncer": "ok"}, pod.hooks
    assert set(exits) == {"app", "pgbouncer", "queue-proxy"}
    for container, (code, seconds) in exits.items():
        assert code == 0, f"{container} exited {code}\n{pod.logs()}"
        assert seconds < pod.grace_seconds, (container, seconds)
    # The app and PgBouncer got SIGTERM only after queue-proxy's drain: no request reaches them
    # while they stop.
    assert exits["app"][1] >= DRAIN_QUIET_SECONDS, exits
    assert exits["pgbouncer"][1] >= DRAIN_QUIET_SECONDS, exits
    with pytest.raises(httpx.HTTPError):
        httpx.get(revision.url, timeout=2)
