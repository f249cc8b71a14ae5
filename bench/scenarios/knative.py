"""Knative on the real node (issue 27): the project's chart installed with the local profile on a
cluster this scenario starts (harness.cluster.up with a real node: kubelet, containerd, runc,
Traefik as Knative's ingress, activator, autoscaler) and takes down, whatever happens.

The yardstick is a FastAPI hello Knative Service made from the chart's own rendered get-user
Service: the same pod (PgBouncer sidecar, queue-proxy, resources, security context, autoscaling
annotations), with only the app container's image swapped for bench/yardsticks/hello.Dockerfile's
(built as userapi's image is, imported into the node as kind.local/userapi-hello:bench), its
argument dropped (the image's entrypoint serves /hello on 8080) and its readiness probe pointed
at /hello. Measured, interleaved:

- scale from zero through the ingress: from sending the request to Traefik until its 200, for
  an authenticated get-user whose profile and token are in Redis (as after an earlier pod), and
  for /hello; with a breakdown from the activator's request log (Knative's, turned on for the
  run: when the activator received the request) and a pod watch (`kubectl get pods -w`, each
  change timed as it arrives): pod created, scheduled, all containers running, Ready, 200;
- warm requests, both Services pinned to one pod: through Traefik -> queue-proxy -> app, and
  from inside the cluster's network namespace straight to the pod's queue-proxy (8012) and its
  app (8080): what the ingress and the queue-proxy add;
- scale-out of get-user under a step load: target concurrency 1 by annotation, max-scale N,
  then N clients from zero: the time to N pods serving, and every non-200 meanwhile.

Requests go to the cluster's addresses only while its network namespace exists.

With USERAPI_BENCH_CLUSTER naming the state directory of a cluster that is already up with a
real node (`make cluster`'s is .dev/cluster, the directory of the KUBECONFIG it prints; `make
test` passes its session node's), the scenario uses that cluster, and the chart's release in it
when there is one, rather than starting its own: afterwards it deletes the hello Service and
puts back what it changed of get-user and config-autoscaler.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import json
import os
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
from userapi.domain.users import user_path

from bench.config import Profile
from bench.load import LoadResult, median_of, paired_ratios, wrk
from bench.scenario import Result, Scenario, Verdict, ratio_at_most
from bench.scenarios.coldstart import summarize
from bench.stack import USER, Stack, cache_outcomes
from harness.cluster import ControlPlane, down, running_plane, up
from harness.cluster.chart_images import HELLO_IMAGE, archives, hello_image, load_chart_images
from harness.cluster.knative import configure
from harness.cluster.node import import_image
from harness.emulator import EmulatorHandle
from manifests.generate import CHART, deep_merge, overlay_values

NAMESPACE = RELEASE = "userapi"
EMULATOR_URL = f"http://auth0-emulator.{NAMESPACE}.svc.cluster.local:8765"
GET_USER, HELLO = "get-user", "hello"
WINDOW = GRACE = "6s"  # the shortest autoscaling window Knative accepts, and a short grace
LABEL = "serving.knative.dev/service"
PATHS = {GET_USER: user_path(USER), HELLO: "/hello"}
APP_PORT, QUEUE_PORT = 8080, 8012
CLUSTER_ENV = "USERAPI_BENCH_CLUSTER"
# Knative's request log, on for the run: the activator writes one line per request it answered,
# when it has answered it. Its receive time is the line's CRI timestamp less the latency.
REQUEST_LOG = {
    "logging.enable-request-log": "true",
    "logging.request-log-template": '{"knative_request": "{{.Revision.Service}}", "path": '
    '"{{js .Request.RequestURI}}", "status": {{.Response.Code}}, "latency": '
    "{{.Response.Latency}}}",
}
PHASES = ("activator received", "pod created", "scheduled", "containers started", "ready", "200")
# What the scenario changes of get-user's revision template, put back on a cluster it was given.
TOUCHED = tuple(f"autoscaling.knative.dev/{key}" for key in ("min-scale", "max-scale", "target"))


class Cluster:
    """The started cluster with the chart released in it, the hello Service beside get-user."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.hosts: dict[str, str] = {}
        self.headers: dict[str, dict[str, str]] = {GET_USER: {}, HELLO: {}}

    def alive(self) -> None:
        # Without its namespace the cluster's 10.x addresses route off the machine.
        if not Path("/run/netns", self.plane.netns).exists():
            raise RuntimeError("the cluster's network namespace is gone")

    def call(self, name: str, timeout: float = 120) -> int:
        """One GET of the Service's bench path through Traefik; its status (0: no answer)."""
        self.alive()
        ingress = urlsplit(self.plane.ingress)
        connection = http.client.HTTPConnection(ingress.netloc, timeout=timeout)
        try:
            connection.request(
                "GET", PATHS[name], headers={**self.headers[name], "Host": self.hosts[name]}
            )
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            connection.close()

    def pods(self, name: str) -> list[dict[str, Any]]:
        return list(self.plane.get("-n", NAMESPACE, "pods", "-l", f"{LABEL}={name}")["items"])

    def serving(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(name) if _ready(p) and not p["metadata"].get(
            "deletionTimestamp")]  # fmt: skip

    def wait_for_zero(self, name: str, timeout: float = 180) -> float:
        started = time.monotonic()
        while self.pods(name):
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{name} never scaled to zero")
            time.sleep(0.5)
        return time.monotonic() - started

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """New revision template annotations (None removes one); waits for it to be Ready."""
        patch = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
        self.plane.kubectl("patch", "ksvc", name, "-n", NAMESPACE, "--type", "merge",
                           "-p", json.dumps(patch))  # fmt: skip
        self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            found = self.plane.get("-n", NAMESPACE, "ksvc", name)
            status = found.get("status", {})
            if (status.get("observedGeneration") == found["metadata"]["generation"]
                    and _ready(found)
                    and status.get("latestReadyRevisionName")
                    == status.get("latestCreatedRevisionName")):  # fmt: skip
                self.hosts[name] = status["url"].split("://", 1)[1]
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not Ready: {json.dumps(status)[:2000]}")
            time.sleep(0.5)


def _ready(resource: dict[str, Any]) -> bool:
    conditions = resource.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    return await asyncio.to_thread(_run, profile, workdir)


def _run(profile: Profile, workdir: Path) -> dict[str, Any]:
    given = os.environ.get(CLUSTER_ENV)
    if given:
        plane = running_plane(Path(given).resolve())
        if plane is None or not Path("/run/netns", plane.netns).exists():
            raise RuntimeError(f"{CLUSTER_ENV}={given}: no cluster with a real node is up there")
        with _released(plane, {}) as cluster:
            return _measure(cluster, profile, workdir, {})
    state = workdir / "knative-cluster"
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        plane = up(state, node=True)
        timings["cluster up"] = time.monotonic() - started
        with _released(plane, timings) as cluster:
            return _measure(cluster, profile, workdir, timings)
    finally:
        down(state)


@contextmanager
def _released(plane: ControlPlane, timings: dict[str, float]) -> Iterator[Cluster]:
    """The chart installed as tests/cluster/test_chart_on_node.py installs it (local profile,
    restricted namespace, dev Secrets, a 6 s window), or the release the cluster already has;
    the hello Service made from its get-user, and an emulator token for get-user."""
    autoscaler = plane.get("-n", "knative-serving", "configmap", "config-autoscaler")
    observability = plane.get("-n", "knative-serving", "configmap", "config-observability")
    configure(plane, "config-autoscaler", {"scale-to-zero-grace-period": GRACE})
    # First: Knative rolls the revisions' Deployments to give queue-proxy the new settings.
    configure(plane, "config-observability", REQUEST_LOG)
    started = time.monotonic()
    existing = plane.kubectl("get", "ksvc", GET_USER, "-n", NAMESPACE, "--ignore-not-found",
                             "-o", "name").stdout.strip()  # fmt: skip
    client = helm.Config(kubeconfig_path=plane.kubeconfig, namespace=NAMESPACE)
    forwarding = contextlib.ExitStack()
    emulator: EmulatorHandle | None = None
    kept: dict[str, Any] = {}
    try:
        if existing:
            kept = _reuse(plane)
        else:
            _install(plane, client, timings)
        cluster = Cluster(plane)
        cluster.wait_ready(GET_USER, timeout=600)
        plane.kubectl("apply", "-f", "-", input=json.dumps(hello_service(plane)))
        cluster.wait_ready(HELLO)
        timings["chart and hello Service Ready"] = time.monotonic() - started
        port = forwarding.enter_context(plane.port_forward(NAMESPACE, "svc/auth0-emulator", 8765))
        emulator = EmulatorHandle(f"http://127.0.0.1:{port}", public_url=EMULATOR_URL)
        token = emulator.token("auth0|knativebench0000000000", ["read:users"])
        cluster.headers[GET_USER] = {"Authorization": f"Bearer {token}"}
        yield cluster
    finally:
        if emulator is not None:
            emulator.close()
        forwarding.close()
        client.close()
        if existing:  # the cluster was given: leave it as it was, without waiting
            plane.kubectl("delete", "ksvc", HELLO, "-n", NAMESPACE, "--wait=false", check=False)
            if kept:
                plane.kubectl("patch", "ksvc", GET_USER, "-n", NAMESPACE, "--type", "merge",
                              "-p", json.dumps(kept), check=False)  # fmt: skip
            before = {**autoscaler.get("data", {}), **observability.get("data", {})}
            grace = before.get("scale-to-zero-grace-period")
            configure(plane, "config-autoscaler", {"scale-to-zero-grace-period": grace})
            configure(plane, "config-observability", {k: before.get(k) for k in REQUEST_LOG})


def _install(plane: ControlPlane, client: helm.Config, timings: dict[str, float]) -> None:
    images = load_chart_images(plane, timings, extra=(hello_image(),))
    values = deep_merge(overlay_values("local"), {
        **images,
        "devSecrets": {"create": True},
        "podAnnotations": {"autoscaling.knative.dev/window": WINDOW},
    })  # fmt: skip
    labels = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}  # fmt: skip
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NAMESPACE, "labels": labels}}  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    client.install(helm.Chart.load(CHART), RELEASE, values, namespace=NAMESPACE, timeout=600)


def _reuse(plane: ControlPlane) -> dict[str, Any]:
    """The release already there: the hello image joins its images, and all of get-user's
    traffic goes to its latest revision (an earlier split would halve what a pod sees), whose
    name Knative picks (a name the release gave, `revisionSuffix`, would refuse the scenario's
    changes). Returns the merge patch that puts back what the scenario changes of get-user."""
    (archive,) = archives([hello_image()])
    import_image(plane, archive)
    spec = plane.get("-n", NAMESPACE, "ksvc", GET_USER)["spec"]
    metadata = spec["template"].get("metadata", {})
    annotations = metadata.get("annotations", {})
    patch = {"spec": {"traffic": [{"latestRevision": True, "percent": 100}],
                      "template": {"metadata": {"name": None}}}}  # fmt: skip
    plane.kubectl("patch", "ksvc", GET_USER, "-n", NAMESPACE, "--type", "merge",
                  "-p", json.dumps(patch))  # fmt: skip
    # With its annotations back, the template is the named revision's again: Knative takes
    # the name back without a new revision.
    return {"spec": {
        "template": {"metadata": {"name": metadata.get("name"), "annotations": {
            key: annotations.get(key) for key in TOUCHED}}},
        "traffic": spec.get("traffic"),
    }}  # fmt: skip


def hello_service(plane: ControlPlane) -> dict[str, Any]:
    """The chart's rendered get-user Service, as the cluster has it, with the hello app."""
    rendered = plane.get("-n", NAMESPACE, "ksvc", GET_USER)
    template = copy.deepcopy(rendered["spec"]["template"])
    template.get("metadata", {}).pop("name", None)
    (app,) = [c for c in template["spec"]["containers"] if c["name"] == "app"]
    app["image"] = HELLO_IMAGE
    app.pop("args", None)
    app.pop("command", None)
    app["readinessProbe"]["httpGet"]["path"] = PATHS[HELLO]
    return {
        "apiVersion": rendered["apiVersion"],
        "kind": "Service",
        "metadata": {"name": HELLO, "namespace": NAMESPACE,
                     "labels": rendered["metadata"].get("labels", {})},
        "spec": {"template": template},
    }  # fmt: skip


def _measure(
    cluster: Cluster, profile: Profile, workdir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    load: dict[str, Any] = {"at start": _load()}
    # The first request fills Redis with the profile (and the pod's Auth0 token): every later
    # cold pod reads them there, as a pod after an earlier one does.
    for name in (GET_USER, HELLO):
        status = cluster.call(name)
        if status != 200:
            raise RuntimeError(f"{name} answered {status} through the ingress")
    cold = _cold_starts(cluster, profile.cold_runs)
    load["after cold starts"] = _load()
    warm = _warm(cluster, profile, workdir)
    load["after warm"] = _load()
    scale_out = _scale_out(cluster, profile.scale_out_pods)
    load["after scale-out"] = _load()
    medians = {name: cold["summary"][name]["median_ms"] for name in (GET_USER, HELLO)}
    return {
        "runs": profile.cold_runs,
        "setup_seconds": {k: round(v, 1) for k, v in timings.items()},
        "load_average": load,
        "cold_start": cold["summary"],
        "cold_start_ratio_to_hello": round(medians[GET_USER] / medians[HELLO], 3),
        "cold_start_breakdown": cold["breakdown"],
        "cold_start_cache": cold["cache"],
        "warm": warm,
        "scale_out": scale_out,
    }


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


class PodWatch:
    """`kubectl get pods -w` on the namespace, each change timed (monotonic) as it arrives. The
    namespace's Deployments' pods arrive first: once they have, the watch is up."""

    def __init__(self, plane: ControlPlane) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.process = subprocess.Popen(
            [str(plane.binary("kubectl")), "--kubeconfig", str(plane.kubeconfig), "get", "pods",
             "-n", NAMESPACE, "-w", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.seen:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the pod watch never started")
            time.sleep(0.02)

    def _read(self) -> None:
        assert self.process.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.process.stdout:
            buffer += line
            try:
                pod, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            self.seen.append((time.monotonic(), pod))
            buffer = buffer.lstrip()[end:]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._thread.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait_for(self, name: str, phase: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while phase not in self.phases(name, 0) and time.monotonic() < deadline:
            time.sleep(0.05)

    def phases(self, name: str, sent: float) -> dict[str, float]:
        """When each phase of the Service's first pod was first seen, in ms after `sent`."""
        first: dict[str, float] = {}
        pod_name = None
        for at, pod in list(self.seen):
            if pod["metadata"].get("labels", {}).get(LABEL) != name:
                continue
            pod_name = pod_name or pod["metadata"]["name"]
            if pod["metadata"]["name"] != pod_name:
                continue
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get(
                "conditions", [])}  # fmt: skip
            statuses = pod.get("status", {}).get("containerStatuses", [])
            reached = {
                "pod created": True,
                "scheduled": conditions.get("PodScheduled") == "True",
                "containers started": bool(statuses)
                and all("running" in s.get("state", {}) for s in statuses),
                "ready": conditions.get("Ready") == "True",
            }
            for phase, done in reached.items():
                if done and phase not in first:
                    first[phase] = round((at - sent) * 1000, 1)
        return first


def _cold_starts(cluster: Cluster, runs: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {GET_USER: [], HELLO: []}
    phases: dict[str, list[dict[str, float]]] = {GET_USER: [], HELLO: []}
    cache: Counter[str] = Counter()
    for attempt in range(runs):
        for name in (GET_USER, HELLO)[:: 1 if attempt % 2 == 0 else -1]:
            cluster.wait_for_zero(name)
            watch = PodWatch(cluster.plane)
            try:
                sent_at = time.time()
                sent = time.monotonic()
                status = cluster.call(name)
                answered = time.monotonic()
            finally:
                # The kubelet reports Ready after queue-proxy's own probe let the activator
                # send the request: the watch goes on until that report too has arrived.
                # Up to 30 s: on loaded cores the report came after 10 (a CI run).
                watch.wait_for(name, "ready", timeout=30)
                watch.stop()
            if status != 200:
                raise RuntimeError(f"{name} from zero answered {status}")
            samples[name].append((answered - sent) * 1000)
            seen = watch.phases(name, sent)
            seen["200"] = round((answered - sent) * 1000, 1)
            received = _activator_received(cluster.plane, name, sent_at)
            if received is not None:
                seen["activator received"] = round((received - sent_at) * 1000, 1)
            phases[name].append(seen)
            if name == GET_USER:
                cache.update(_cache_outcomes(cluster))
    breakdown = {}
    for name, runs_seen in phases.items():
        breakdown[name] = {
            "median_ms_after_send": {
                phase: round(statistics.median(r[phase] for r in runs_seen if phase in r), 1)
                for phase in PHASES if any(phase in r for r in runs_seen)
            },
            "runs": runs_seen,
        }  # fmt: skip
    return {
        "summary": {name: summarize(values) for name, values in samples.items()},
        "breakdown": breakdown,
        "cache": dict(cache),
    }


def _activator_received(plane: ControlPlane, name: str, sent_at: float) -> float | None:
    """When (epoch s) the activator received the request for `name` sent at `sent_at`: from its
    request log line (REQUEST_LOG), which may reach the CRI log a moment after the 200."""
    since = datetime.fromtimestamp(sent_at - 2, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = plane.kubectl("logs", "-n", "knative-serving", "-l", "app=activator",
                             "--timestamps", f"--since-time={since}", "--tail=-1",
                             check=False).stdout  # fmt: skip
        found = []
        for line in logs.splitlines():
            stamp, _, text = line.partition(" ")
            try:
                entry = json.loads(text)
                written = _rfc3339(stamp)
            except ValueError:
                continue
            if entry.get("knative_request") == name and entry.get("path") == PATHS[name]:
                found.append(written - float(entry["latency"]))
        # Each cold start is the only request of its Service since it went to zero.
        after = [at for at in found if at >= sent_at - 1]
        if after:
            return min(after)
        time.sleep(0.2)
    return None


def _rfc3339(stamp: str) -> float:
    """Epoch seconds of a CRI log timestamp (RFC 3339 with up to nanoseconds)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    at = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return at + float("0." + (fraction or "0"))


def _cache_outcomes(cluster: Cluster) -> Counter[str]:
    """How get-user's serving pod answered (its request log lines' `cache`)."""
    counts: Counter[str] = Counter()
    for pod in cluster.pods(GET_USER):
        logs = cluster.plane.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c",
                                     "app", check=False).stdout  # fmt: skip
        counts.update(cache_outcomes(logs))
    return counts


def _warm(cluster: Cluster, profile: Profile, workdir: Path) -> dict[str, Any]:
    """Both pinned to one pod; per round and connection count, each path of each Service."""
    pin = {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"}
    for name in (GET_USER, HELLO):
        cluster.annotate(name, pin)
    pod_ips = {}
    for name in (GET_USER, HELLO):
        deadline = time.monotonic() + 120
        while len(serving := cluster.serving(name)) != 1 or len(cluster.pods(name)) != 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never settled on one pod")
            time.sleep(0.5)
        pod_ips[name] = serving[0]["status"]["podIP"]
    levels = [c for c in profile.warm_concurrency if c in (1, 50)]
    paths = ("ingress", "queue-proxy", "app")
    rounds: dict[str, dict[str, dict[int, list[LoadResult]]]] = {
        name: {path: {c: [] for c in levels} for path in paths} for name in (GET_USER, HELLO)
    }
    netns = ["ip", "netns", "exec", cluster.plane.netns]
    for attempt in range(profile.warm_rounds):
        for connections in levels:
            for path in paths:
                for name in (GET_USER, HELLO)[:: 1 if attempt % 2 == 0 else -1]:
                    cluster.alive()
                    headers = dict(cluster.headers[name])
                    if path == "ingress":
                        url, prefix = cluster.plane.ingress, []
                        headers["Host"] = cluster.hosts[name]
                    else:
                        port = QUEUE_PORT if path == "queue-proxy" else APP_PORT
                        url, prefix = f"http://{pod_ips[name]}:{port}", netns
                    result = asyncio.run(wrk(url + PATHS[name], connections=connections,
                                             seconds=profile.warm_seconds, headers=headers,
                                             workdir=workdir, prefix=prefix))  # fmt: skip
                    rounds[name][path][connections].append(result)
    out: dict[str, Any] = {"levels": []}
    for connections in levels:
        level: dict[str, Any] = {"connections": connections, "paths": {}}
        for path in paths:
            ours, theirs = rounds[GET_USER][path][connections], rounds[HELLO][path][connections]
            level["paths"][path] = {
                GET_USER: median_of(ours).as_dict(),
                HELLO: median_of(theirs).as_dict(),
                "ratio_to_hello": paired_ratios(ours, theirs),
            }
        out["levels"].append(level)
    return out


def _scale_out(cluster: Cluster, pods: int) -> dict[str, Any]:
    """get-user from zero under twice `pods` clients back to back, at a target of 1 request
    per pod and at most `pods` pods: the time to that many serving, and every non-200
    meanwhile. Twice: a cached read spends about half of a client's turn in the pod, so `pods`
    clients kept the pods' measured concurrency near the autoscaler's edge (target 1 x 70 %
    utilisation), and one quiet run never asked for the last pod in 180 s."""
    cluster.annotate(GET_USER, {"autoscaling.knative.dev/target": "1",
                                "autoscaling.knative.dev/min-scale": None,
                                "autoscaling.knative.dev/max-scale": str(pods)})  # fmt: skip
    cluster.wait_for_zero(GET_USER)
    statuses: Counter[int] = Counter()
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            status = cluster.call(GET_USER, timeout=60)
            with lock:
                statuses[status] += 1

    clients = 2 * pods
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    reached: float | None = None
    most = 0  # the most pods seen serving: what a run that never reached `pods` got to
    try:
        while time.monotonic() - started < 180:
            most = max(most, len(cluster.serving(GET_USER)))
            if most >= pods:
                reached = time.monotonic() - started
                break
            time.sleep(0.25)
        time.sleep(2)  # the last pod serving, under load
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    return {
        "pods": pods,
        "clients": clients,
        "most_pods_serving": most,
        "seconds_to_all_serving": round(reached, 2) if reached is not None else None,
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(v for k, v in statuses.items() if k != 200),
    }


def judge(box: Result) -> list[Verdict]:
    scale = box["scale_out"]
    return [
        ratio_at_most(
            "Knative scale from zero (get-user)",
            1.2,
            "FastAPI hello Service",
            box["cold_start_ratio_to_hello"],
        ),
        Verdict(
            target=f"Knative scale-out to {scale['pods']} pods",
            goal="all serving within 180 s, 0 errors",
            measured=f"{scale['most_pods_serving']} serving after "
            f"{scale['seconds_to_all_serving']} s, {scale['errors']} errors",
            met=scale["errors"] == 0 and scale["seconds_to_all_serving"] is not None,
        ),
    ]


def render(box: Result) -> list[str]:
    cold, ratio = box["cold_start"], box["cold_start_ratio_to_hello"]
    steps = box["cold_start_breakdown"]
    load = "; ".join(f"{when} {' '.join(map(str, values))}"
                     for when, values in box["load_average"].items())  # fmt: skip
    lines = [
        "",
        f"**Knative on the real node** (the chart, local profile; yardstick: its get-user "
        f"Service with the FastAPI hello image; load average {load}). Scale from zero through "
        f"Traefik to the first 200, {box['runs']} runs each, interleaved: get-user median "
        f"{cold[GET_USER]['median_ms']:.0f} ms (min {cold[GET_USER]['min_ms']:.0f}, max "
        f"{cold[GET_USER]['max_ms']:.0f}), hello median {cold[HELLO]['median_ms']:.0f} ms: "
        f"{ratio:.2f} x. get-user's cold pods' reads: {box['cold_start_cache']}.",
        "",
        "| ms after sending (median) | activator received | pod created | scheduled | "
        "containers running | Ready | 200 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (GET_USER, HELLO):
        m = steps[name]["median_ms_after_send"]
        cells = [f"{m[p]:.0f}" if p in m else "-" for p in PHASES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| connections | path | get-user req/s | hello req/s | req/s ratio | get-user p99 ms "
        "| hello p99 ms | p99 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level in box["warm"]["levels"]:
        for path, row in level["paths"].items():
            r = row["ratio_to_hello"]
            lines.append(
                f"| {level['connections']} | {path} | {row[GET_USER]['rps']:.0f} | "
                f"{row[HELLO]['rps']:.0f} | {r['rps_ratio']} | {row[GET_USER]['p99_ms']:.1f} | "
                f"{row[HELLO]['p99_ms']:.1f} | {r['p99_ratio']} |"
            )
    scale = box["scale_out"]
    seconds = scale["seconds_to_all_serving"]
    reached = (
        f"all {scale['pods']} pods serving after {seconds} s"
        if seconds is not None
        else f"at most {scale['most_pods_serving']} pods serving, never all in 180 s"
    )
    lines += [
        "",
        f"Scale-out: get-user at target concurrency 1, max-scale {scale['pods']}, "
        f"{scale['clients']} clients from zero: {reached}; {scale['requests']} requests, "
        f"statuses {scale['statuses']}, {scale['errors']} errors.",
    ]
    return lines


SCENARIO = Scenario("knative", run=run, render=render, judge=judge)
