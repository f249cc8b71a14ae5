"""Every endpoint run as the pod its Knative Service describes, under podman.

The image is built from the Dockerfile by `make image`'s own code (stand-in bases when no
registry answers); the chart is rendered by real Helm with local values; each Knative Service's
`spec.template.spec` runs as a pod (app + PgBouncer sidecar in one network namespace, the chart's
users, capabilities, read-only roots, commands, pgbouncer.ini, Secrets and ConfigMap mounted as
the chart mounts them) against the tests' real Redis, PostgreSQL and Auth0 emulator, after the
migration Job's container ran from the same image. What podman does differently from a kubelet
is adapted in harness/pods.py, never in the chart.

What this cannot show: Knative's own data path (queue-proxy, the activator, autoscaling).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from userapi.domain.users import user_path
from userapi.emulator import DEV_CLIENT_SECRET

from harness import images as image_tool
from harness import podman as podman_harness
from harness.emulator import cloud_event
from harness.pods import HOST_FROM_POD, Pod, knative_pod_spec, run_pod
from harness.processes import free_port
from tests.support import bearer
from tests.support.chart import knative_services, render
from tests.support.pod_backends import EVENTS_SECRET, TAG, PodBackends, pod_backends, spec_of

pytestmark = pytest.mark.pods

ENDPOINTS = ("get-user", "list-users", "create-user", "update-user", "delete-user", "auth0-events")
ADMIN = "auth0|admin0000000000000000000"
PERMISSIONS = ["read:users", "create:users", "update:users", "delete:users"]
PGBOUNCER_PORT = 6432


class Deployment:
    """The six pods, the servers behind them and what the tests need to reach them."""

    def __init__(
        self,
        engine: podman_harness.Podman,
        pods: dict[str, Pod],
        backends: PodBackends,
        objects: list[dict[str, Any]],
    ) -> None:
        self.engine = engine
        self.pods = pods
        self.emulator = backends.emulator
        self.postgres = backends.postgres
        self.database = backends.database
        self.redis = backends.redis
        self.objects = objects
        self.http = {
            name: httpx.Client(base_url=pod.url(), timeout=30) for name, pod in pods.items()
        }

    def admin(self) -> str:
        return self.emulator.token(ADMIN, PERMISSIONS)

    def call(
        self, endpoint: str, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        return bearer.request(self.http[endpoint], method, path, token, **kwargs)

    def sql(self, query: str) -> list[str]:
        return self.postgres.psql(query, database=self.database).stdout.splitlines()


@pytest.fixture(scope="module")
def deployment(
    podman_engine: podman_harness.Podman, pod_image: Any, postgres_server: Any
) -> Iterator[Deployment]:
    pods: dict[str, Pod] = {}
    deployment: Deployment | None = None
    with pod_backends(postgres_server) as backends:
        # The PgBouncer image as the build made it available: a stand-in has a name of its own.
        sidecar = pod_image.bases[image_tool.pgbouncer_image()]
        objects = render({**backends.values, "pgbouncer": {"image": sidecar}})
        configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
        try:
            backends.migrate(podman_engine, objects)
            services = knative_services(objects)

            def start(endpoint: str) -> Pod:
                return run_pod(
                    podman_engine,
                    endpoint,
                    knative_pod_spec(services[endpoint]),
                    secrets=backends.secrets,
                    configmaps=configmaps,
                    publish={8080: free_port()},
                )

            with ThreadPoolExecutor(max_workers=3) as pool:
                pods = dict(zip(ENDPOINTS, pool.map(start, ENDPOINTS), strict=True))
            for endpoint, pod in pods.items():
                _wait_healthy(pod, endpoint)
                for container in pod.containers:
                    assert pod.running(container), f"{endpoint} {container}\n{pod.logs()}"
            deployment = Deployment(podman_engine, pods, backends, objects)
            yield deployment
        finally:
            if deployment is not None:
                for client in deployment.http.values():
                    client.close()
            for pod in pods.values():
                pod.remove()


def _wait_healthy(pod: Pod, endpoint: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(pod.url() + "/healthz", timeout=2)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        if not pod.running("app"):
            break
        time.sleep(0.1)
    raise AssertionError(f"{endpoint}: /healthz never 200 ({last!r})\n{pod.logs()}")


# --- the image ---------------------------------------------------------------------------------


def test_the_image_has_no_installers_and_reports_its_size(
    podman_engine: podman_harness.Podman, pod_image: Any
) -> None:
    engine, built = podman_engine, pod_image
    assert built.sizes.app_layer > 10_000_000  # the venv: a real measurement, not a zero
    assert built.sizes.app_layer_compressed < built.sizes.app_layer
    assert built.sizes.total > built.sizes.base > 0
    probe = (
        "import importlib.util, sys, pathlib; "
        "found = [m for m in ('pip', 'setuptools', 'wheel', '_distutils_hack')"
        " if importlib.util.find_spec(m)]; "
        "pth = [str(p) for d in sys.path if d for p in pathlib.Path(d).glob('*.pth')]; "
        "print(found, pth)"
    )
    for python in ("python3", "/opt/venv/bin/python"):
        result = engine(
            "run", "--rm", "--network", "none", "--entrypoint", python, TAG, "-c", probe
        )
        assert result.stdout.strip() == "[] []", (python, result.stdout)
    # The CA bundle and pip.conf the build mounted (harness/images.py) stayed out of the image.
    listing = engine(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/ls", TAG, "-a", "/run", "/etc"
    ).stdout.split()
    assert "userapi-build" not in listing
    assert "pip.conf" not in listing


# --- each pod as the chart describes it ----------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_pod_runs_as_the_chart_says(deployment: Deployment, endpoint: str) -> None:
    pod = deployment.pods[endpoint]
    app, sidecar = pod.status("app"), pod.status("pgbouncer")
    assert app["Uid"].split()[:2] == ["10001", "10001"], app["Uid"]
    assert app["Gid"].split()[:2] == ["10001", "10001"], app["Gid"]
    assert sidecar["Uid"].split()[:2] == ["70", "70"], sidecar["Uid"]
    assert sidecar["Gid"].split()[:2] == ["70", "70"], sidecar["Gid"]  # runAsGroup, not the image's
    for status in (app, sidecar):
        assert int(status["CapEff"], 16) == 0
        assert int(status["CapPrm"], 16) == 0
        assert status["NoNewPrivs"] == "1"
    # Read-only root filesystems; only the chart's emptyDir /tmp is writable.
    denied = pod.exec("app", "python3", "-c", "open('/opt/venv/x', 'w')")
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    assert pod.exec("app", "python3", "-c", "open('/tmp/x', 'w').write('x')").returncode == 0
    assert pod.exec("pgbouncer", "/bin/sh", "-c", "echo x > /etc/x").returncode != 0
    # Only the Secret key this endpoint reads is mounted.
    mounted = pod.exec("app", "ls", "/var/run/secrets/userapi/auth0").stdout.split()
    wanted = "events-secret" if endpoint == "auth0-events" else "client-secret"
    assert mounted == [wanted]
    content = pod.exec("app", "cat", f"/var/run/secrets/userapi/auth0/{wanted}").stdout
    assert content == (EVENTS_SECRET if wanted == "events-secret" else DEV_CLIENT_SECRET)
    # The sidecar runs the chart's command with the chart's pgbouncer.ini.
    ini = pod.exec("pgbouncer", "cat", "/etc/pgbouncer/pgbouncer.ini").stdout
    assert (
        ini == spec_of(deployment.objects, "ConfigMap", "demo-pgbouncer")["data"]["pgbouncer.ini"]
    )
    command = pod.exec("pgbouncer", "cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[:2] == ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]


def _user(deployment: Deployment) -> dict[str, Any]:
    return deployment.emulator.create_user(
        f"pod-{secrets.token_hex(4)}@example.com", name="Pod Person"
    )


def test_get_user_serves_a_profile_then_from_the_cache(deployment: Deployment) -> None:
    user = _user(deployment)
    admin = deployment.admin()
    first = deployment.call("get-user", "GET", user_path(user["user_id"]), admin)
    assert first.status_code == 200, first.text
    assert first.json()["email"] == user["email"]
    calls = deployment.emulator.calls("GET /api/v2/users/{id}")
    again = deployment.call("get-user", "GET", user_path(user["user_id"]), admin)
    assert again.status_code == 200
    assert deployment.emulator.calls("GET /api/v2/users/{id}") == calls  # Redis served it
    assert deployment.call("get-user", "GET", user_path(user["user_id"])).status_code == 401


def test_list_users_searches(deployment: Deployment) -> None:
    marker = secrets.token_hex(4)
    for i in range(2):
        deployment.emulator.create_user(f"list-{marker}-{i}@example.com")
    response = deployment.call(
        "list-users", "GET", "/users", deployment.admin(), params={"q": f"email:list-{marker}*"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 2


def test_create_user_with_an_idempotency_key(deployment: Deployment) -> None:
    body = {
        "email": f"pod-new-{secrets.token_hex(4)}@example.com",
        "password": "Str0ng-passw0rd!",
        "name": "Made In A Pod",
        "plan": "team",
    }
    key = secrets.token_hex(8)
    admin = deployment.admin()
    created = deployment.call(
        "create-user", "POST", "/users", admin, json=body, headers={"Idempotency-Key": key}
    )
    assert created.status_code == 201, created.text
    replay = deployment.call(
        "create-user", "POST", "/users", admin, json=body, headers={"Idempotency-Key": key}
    )
    assert replay.status_code == 201
    assert replay.json()["user_id"] == created.json()["user_id"]
    user_id = created.json()["user_id"]
    assert deployment.sql(f"SELECT plan FROM accounts WHERE user_id = '{user_id}'") == ["team"]


def test_update_user_with_if_match(deployment: Deployment) -> None:
    user = _user(deployment)
    admin = deployment.admin()
    path = user_path(user["user_id"])
    tag = deployment.call("get-user", "GET", path, admin).headers["etag"]
    updated = deployment.call(
        "update-user", "PATCH", path, admin, json={"name": "Renamed"}, headers={"If-Match": tag}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "Renamed"
    stale = deployment.call(
        "update-user", "PATCH", path, admin, json={"name": "Lost"}, headers={"If-Match": tag}
    )
    assert stale.status_code == 412


def test_delete_user(deployment: Deployment) -> None:
    user = _user(deployment)
    admin = deployment.admin()
    path = user_path(user["user_id"])
    assert deployment.call("get-user", "GET", path, admin).status_code == 200
    assert deployment.call("delete-user", "DELETE", path, admin).status_code == 204
    assert deployment.call("get-user", "GET", path, admin).status_code == 404


def _event(user: dict[str, Any]) -> dict[str, Any]:
    return cloud_event("user.updated", user)


def test_auth0_events_delivery(deployment: Deployment) -> None:
    user = _user(deployment)
    admin = deployment.admin()
    path = user_path(user["user_id"])
    assert deployment.call("get-user", "GET", path, admin).status_code == 200
    # A change made in Auth0; the event names it, and the next read asks Auth0 again.
    changed = deployment.emulator.update_user(user["user_id"], name="From An Event")
    event = _event(changed)
    delivered = deployment.call(
        "auth0-events",
        "POST",
        "/events/auth0",
        EVENTS_SECRET,
        content=json.dumps(event),
        headers={"Content-Type": "application/json"},
    )
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["applied"] == 1
    assert deployment.call("get-user", "GET", path, admin).json()["name"] == "From An Event"
    wrong = deployment.call("auth0-events", "POST", "/events/auth0", "wrong", json=event)
    assert wrong.status_code == 401


# The endpoints whose requests read or write PostgreSQL (list-users and auth0-events never do).
DATABASE_ENDPOINTS = ("get-user", "create-user", "update-user", "delete-user")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_app_reaches_postgresql_only_through_the_sidecar(
    deployment: Deployment, endpoint: str
) -> None:
    """A request of the endpoint, then the app's own TCP connections: PgBouncer on
    127.0.0.1:6432 inside the pod when it used the database, never PostgreSQL itself; the
    sidecar holds those."""
    pod = deployment.pods[endpoint]
    _database_request(deployment, endpoint)
    postgres = (HOST_FROM_POD, deployment.postgres.port)
    app_peers = pod.tcp_peers("app")
    assert postgres not in app_peers, app_peers
    if endpoint in DATABASE_ENDPOINTS:
        assert ("127.0.0.1", PGBOUNCER_PORT) in app_peers, f"{app_peers}\n{pod.logs()}"
        assert postgres in pod.tcp_peers("pgbouncer")
    else:
        assert ("127.0.0.1", PGBOUNCER_PORT) not in app_peers


def _database_request(deployment: Deployment, endpoint: str) -> None:
    """One authenticated request of the endpoint's own kind (a database read or write where the
    endpoint has one)."""
    admin = deployment.admin()
    if endpoint == "create-user":
        body = {"email": f"db-{secrets.token_hex(4)}@example.com", "password": "Str0ng-passw0rd!"}
        response = deployment.call("create-user", "POST", "/users", admin, json=body)
        assert response.status_code == 201, response.text
        return
    user = _user(deployment)
    path = user_path(user["user_id"])
    if endpoint == "update-user":
        response = deployment.call("update-user", "PATCH", path, admin, json={"name": "Db"})
        assert response.status_code == 200, response.text
    elif endpoint == "delete-user":
        assert deployment.call("delete-user", "DELETE", path, admin).status_code == 204
    elif endpoint == "list-users":
        response = deployment.call(
            "list-users", "GET", "/users", admin, params={"q": f"email:{user['email']}"}
        )
        assert response.status_code == 200, response.text
    elif endpoint == "auth0-events":
        event = json.dumps(_event(user))
        headers = {"Content-Type": "application/json"}
        response = deployment.call(
            "auth0-events", "POST", "/events/auth0", EVENTS_SECRET, content=event, headers=headers
        )
        assert response.status_code == 200, response.text
    else:
        assert deployment.call(endpoint, "GET", path, admin).status_code == 200


# --- shutdown: last, it ends each pod -------------------------------------------------------


IN_FLIGHT = 6
AUTH0_LATENCY_MS = 1500


def _in_flight_requests(
    deployment: Deployment, endpoint: str, client: httpx.Client
) -> list[Callable[[], int]]:
    """IN_FLIGHT requests of the endpoint's own kind that will still be running when SIGTERM
    arrives: each waits on the (slowed) Auth0 emulator or sends its body slowly."""
    admin = deployment.admin()
    users = [_user(deployment) for _ in range(IN_FLIGHT)]
    auth = {"Authorization": f"Bearer {admin}"}

    def request(index: int) -> Callable[[], int]:
        user = users[index]
        path = user_path(user["user_id"])
        if endpoint == "get-user":
            return lambda: client.get(path, headers=auth).status_code
        if endpoint == "list-users":
            q = {"q": f"email:{user['email']}"}
            return lambda: client.get("/users", params=q, headers=auth).status_code
        if endpoint == "create-user":
            body = {
                "email": f"inflight-{secrets.token_hex(4)}@example.com",
                "password": "Str0ng-passw0rd!",
            }
            key = {"Idempotency-Key": secrets.token_hex(8), **auth}
            return lambda: client.post("/users", json=body, headers=key).status_code
        if endpoint == "update-user":
            return lambda: client.patch(path, json={"name": "Late"}, headers=auth).status_code
        if endpoint == "delete-user":
            return lambda: client.delete(path, headers=auth).status_code
        # auth0-events never calls Auth0: its delivery is in flight while its body trickles in.
        event = json.dumps(_event(user))

        def slow_body() -> Iterator[bytes]:
            yield event[:20].encode()
            time.sleep(AUTH0_LATENCY_MS / 1000)
            yield event[20:].encode()

        headers = {"Authorization": f"Bearer {EVENTS_SECRET}", "Content-Type": "application/json"}
        return lambda: (
            client.post("/events/auth0", content=slow_body(), headers=headers).status_code
        )

    return [request(i) for i in range(IN_FLIGHT)]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_sigterm_with_requests_in_flight_loses_none(deployment: Deployment, endpoint: str) -> None:
    pod = deployment.pods[endpoint]
    _database_request(deployment, endpoint)  # warm: the app's pool holds its connection
    client = httpx.Client(base_url=pod.url(), timeout=60)
    requests = _in_flight_requests(deployment, endpoint, client)
    deployment.emulator.latency(AUTH0_LATENCY_MS)
    try:
        with client, ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            futures = [pool.submit(r) for r in requests]
            time.sleep(AUTH0_LATENCY_MS / 3000)  # all sent, none answered yet
            assert not any(f.done() for f in futures)
            exits = pod.terminate()
            statuses = [f.result(timeout=60) for f in futures]
    finally:
        deployment.emulator.latency(0)
    expected = {"create-user": 201, "delete-user": 204}.get(endpoint, 200)
    assert statuses == [expected] * IN_FLIGHT, pod.logs()
    assert set(exits) == {"app", "pgbouncer"}
    for container, (code, seconds) in exits.items():
        assert code == 0, f"{container} exited {code}\n{pod.logs()}"
        assert seconds < pod.grace_seconds
    # Nothing is served after it: the pod is gone.
    with pytest.raises(httpx.HTTPError):
        httpx.get(pod.url() + "/healthz", timeout=2)
