"""`skaffold dev -p local,dev` against the real node (conftest.py's `real_node`), as a developer
runs it after `make cluster`, in the background: it builds both images (the app's from the
Dockerfile's dev stage) and imports them into the node (`make image LOAD=skaffold`), installs
the chart with Helm, waits for what it deployed, streams the pods' logs and port-forwards the
emulator. Then, in its copy of the checkout:

- a handler's answer is edited: skaffold copies the file into the running pods (`kubectl exec
  ... tar`), `userapi reload` forks a new app process and stops the old one once it serves,
  and the ingress serves the new answer with no rebuild and no new Revision; the
  edit-to-served time is printed (`-s`) and bounded;
- a dependency is added in pyproject.toml (with another edit of the answer): not syncable, so
  both images are rebuilt, imported, and a new Revision serves the new answer;
- SIGINT to skaffold's process group, as Ctrl-C sends it: skaffold uninstalls the release, and
  no process of its group is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from harness.processes import spawn, stop_process
from harness.skaffold import Skaffold
from tests.support.real_node import Node, ready
from tests.support.skaffold_node import (
    NAMESPACE,
    delete_release,
    skaffold_env,
    wait_namespace_gone,
)

pytestmark = pytest.mark.cluster

HANDLER = Path("services/userapi/web/app.py")
ANSWER = 'return {"status": "ok"}'
# s from the save to the new answer. The target is 5 s: with `userapi reload` and skaffold's
# watcher at WATCH_MS it took 1.42 s at a load average of 5.1 on 2 cores (the watcher 0.32 s of
# it); with the watcher's default 1 s debounce it took 2.8 to 7.0 s at loads of 8 to 17, and
# uvicorn --reload 7.6 to 8.9 s (docs/deploying.md). The bound leaves room for this machine's
# load; a rebuild instead of the sync takes over a minute.
EDIT_BUDGET = 10.0
# skaffold's file watcher syncs this long after the last change it saw (its notify trigger's
# debounce, pkg/skaffold/trigger/fsnotify/trigger.go): 1 s by default, 1.2 to 1.4 s of the
# edit-to-served time measured with it. docs/deploying.md gives users the same flag.
WATCH_MS = 200
STARTED = "Press Ctrl+C to exit"
SYNCING = "Syncing 1 files for dev.local/userapi"  # skaffold has seen the edit, copies it
DEPLOYING = "Starting deploy..."  # the rebuilt images are built and imported
_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Dev:
    node: Node
    tool: Skaffold
    process: Any
    log: Path
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def plane(self) -> ControlPlane:
        return self.node.plane

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthz(self, endpoint: str = "get-user") -> str:
        service = self.plane.get("-n", NAMESPACE, "ksvc", endpoint)
        host = service["status"]["url"].split("://", 1)[1]
        try:
            status, body, _ = self.node.call(host, "/healthz", timeout=5)
        except (TimeoutError, urllib.error.URLError) as error:
            # While the app restarts the pod is not ready, and the request may wait for it.
            return f"no answer: {error}"
        return body if status == 200 else f"{status}: {body}"

    def edit(self, old: str, new: str) -> None:
        path = self.tool.workdir / HANDLER
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    def pods(self, endpoint: str) -> set[str]:
        selector = f"serving.knative.dev/service={endpoint}"
        return {p["metadata"]["name"] for p in self.plane.get(
            "-n", NAMESPACE, "pods", "-l", selector)["items"]}  # fmt: skip

    def revisions(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for revision in self.plane.get("-n", NAMESPACE, "revisions")["items"]:
            service = revision["metadata"]["labels"]["serving.knative.dev/service"]
            found.setdefault(service, []).append(revision["metadata"]["name"])
        return {name: sorted(names) for name, names in found.items()}

    def wait_for_answer(self, answer: str, timeout: float, step: str, seen: int) -> float:
        """Seconds until get-user's /healthz (through Traefik) answers `answer`; measures when
        skaffold's log first shows `step` more than `seen` times, as `<step> (skaffold)`."""
        started = time.monotonic()
        while (got := self.healthz()) != answer:
            if f"edit to log {step!r}" not in self.measured and self.output().count(step) > seen:
                self.measured[f"edit to log {step!r}"] = time.monotonic() - started
            assert self.process.poll() is None, self.output()[-6000:]
            assert time.monotonic() - started < timeout, (got, self.output()[-6000:])
            time.sleep(0.05)
        return time.monotonic() - started


def services(plane: ControlPlane) -> list[dict[str, Any]]:
    return list(plane.get("-n", NAMESPACE, "ksvc")["items"])


@pytest.fixture(scope="module")
def dev(
    real_node: Node, skaffold_engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dev]:
    assert not real_node.is_down, "the real node was taken down before this module ran"
    plane = real_node.plane
    wait_namespace_gone(plane)
    tmp = tmp_path_factory.mktemp("skaffold-dev")
    tool = Skaffold.create(tmp, kubeconfig_path=plane.kubeconfig)
    extra = skaffold_env(tool, real_node, skaffold_engine)
    log = tmp / "skaffold-dev.log"
    started = time.monotonic()
    process = spawn([str(tool.bin / "skaffold"), "dev", "-p", "local,dev", "--port-forward=user",
                     f"--watch-poll-interval={WATCH_MS}"],
                    log, env=tool.env(extra, offline=False), cwd=tool.workdir)  # fmt: skip
    found = Dev(real_node, tool, process, log)
    try:
        while STARTED not in found.output():
            assert process.poll() is None, found.output()[-8000:]
            assert time.monotonic() - started < 1800, found.output()[-8000:]
            time.sleep(1)
        found.measured["skaffold dev: start to Ctrl+C prompt"] = time.monotonic() - started
        yield found
    finally:
        if process.poll() is None:
            stop_process(process, signal.SIGINT, timeout=180)
        delete_release(tool, plane, extra)
        print(f"\nskaffold dev: {json.dumps({k: round(v, 2) for k, v in found.measured.items()})}")


def test_dev_builds_deploys_and_waits_for_every_service(dev: Dev) -> None:
    output = dev.output()
    # Both images from `make image`, the app's dev stage, each imported into the node.
    assert re.search(r"harness/images.py --tag dev.local/userapi:\S+ --target dev", output)
    assert "harness/images.py --tag dev.local/userapi-emulator:" in output
    assert output.count("loaded as dev.local/userapi") == 2, output[-6000:]
    # skaffold's status check passed before its prompt, and every Service is Ready then.
    found = services(dev.plane)
    assert {s["metadata"]["name"] for s in found} == set(ENDPOINTS)
    assert [s["metadata"]["name"] for s in found if not ready(s)] == []
    assert dev.revisions() == {name: [f"{name}-00001"] for name in ENDPOINTS}
    # The pods' logs are streamed (each line prefixed with its container's name), from the
    # prompt on: get-user's start-up line is among them.
    deadline = time.monotonic() + 60
    while '[app]{"time"' not in (output := dev.output()) or (
        '"message":"ready","endpoint":"get-user"' not in output
    ):
        assert time.monotonic() < deadline, output[-6000:]
        time.sleep(0.5)
    # The emulator is port-forwarded to the machine's loopback.
    forwarded = re.search(r"Port forwarding service/auth0-emulator in namespace userapi, "
                          r"remote port 8765 -> http://127.0.0.1:(\d+)", output)  # fmt: skip
    assert forwarded, output[-6000:]
    url = f"http://127.0.0.1:{forwarded[1]}/.well-known/jwks.json"
    with _local.open(url, timeout=10) as response:
        assert json.loads(response.read())["keys"]
    assert json.loads(dev.healthz()) == {"status": "ok"}


def test_an_edit_is_synced_and_served_without_a_rebuild(dev: Dev) -> None:
    pod = dev.pods("get-user")
    builds = dev.output().count("harness/images.py --tag dev.local/userapi:")
    dev.measured["load average (1 min) at the edit"] = os.getloadavg()[0]
    saved = time.monotonic()
    dev.edit(ANSWER, 'return {"status": "ok", "edit": "synced"}')
    # The wall-clock time, to read the pods' log lines against.
    print(f"\nskaffold dev: edit saved at {datetime.now(UTC):%H:%M:%S.%f} UTC")
    seconds = dev.wait_for_answer('{"status":"ok","edit":"synced"}', EDIT_BUDGET, SYNCING, 0)
    dev.measured["edit to served (sync, reload)"] = seconds
    assert time.monotonic() - saved < EDIT_BUDGET
    output = dev.output()
    assert SYNCING in output, output[-6000:]
    assert output.count("harness/images.py --tag dev.local/userapi:") == builds
    # The same pod serves it: no new Revision, no new pod.
    assert dev.revisions() == {name: [f"{name}-00001"] for name in ENDPOINTS}
    assert dev.pods("get-user") == pod


def test_a_dependency_change_is_rebuilt_into_a_new_revision(dev: Dev) -> None:
    builds = dev.output().count("harness/images.py --tag dev.local/userapi:")
    pyproject = dev.tool.workdir / "pyproject.toml"
    text = pyproject.read_text()
    # A dependency the lock already installs (anyio, under httpx): the build stays offline-safe.
    assert '    "httptools>=0.6",\n' in text
    saved = time.monotonic()
    pyproject.write_text(text.replace('    "httptools>=0.6",\n',
                                      '    "httptools>=0.6",\n    "anyio>=4",\n'))  # fmt: skip
    dev.edit('"edit": "synced"', '"edit": "rebuilt"')
    seconds = dev.wait_for_answer('{"status":"ok","edit":"rebuilt"}', 900, DEPLOYING, 1)
    dev.measured["dependency change to served (rebuild, new Revision)"] = seconds
    assert time.monotonic() - saved < 900
    output = dev.output()
    assert output.count("harness/images.py --tag dev.local/userapi:") == builds + 1
    assert output.count("loaded as dev.local/userapi:") >= 2
    service = dev.plane.get("-n", NAMESPACE, "ksvc", "get-user")
    assert service["status"]["latestReadyRevisionName"] == "get-user-00002"
    assert dev.revisions()["get-user"] == ["get-user-00001", "get-user-00002"]


def test_ctrl_c_cleans_up_what_dev_deployed(dev: Dev) -> None:
    plane = dev.plane
    started = time.monotonic()
    os.killpg(dev.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    code = dev.process.wait(timeout=300)
    dev.measured["Ctrl-C to skaffold's exit"] = time.monotonic() - started
    output = dev.output()
    assert "Cleaning up..." in output, output[-4000:]
    assert code == 0, output[-4000:]
    # No process of skaffold's group is left (its kubectl port-forwards and log streams).
    with pytest.raises(ProcessLookupError):
        os.killpg(dev.process.pid, 0)
    # The release is gone at once: what Helm made, the Knative Services among them.
    assert plane.get("secrets", "-n", NAMESPACE, "-l", "owner=helm")["items"] == []
    for kind in ("ksvc", "jobs"):
        assert plane.get("-n", NAMESPACE, kind)["items"] == [], kind
    # What Knative made for them goes after them (Kubernetes' garbage collector), pods last.
    deadline = time.monotonic() + 180
    while left := leftovers(plane):
        assert time.monotonic() < deadline, left
        time.sleep(1)
    dev.measured["Ctrl-C to nothing left"] = time.monotonic() - started


def leftovers(plane: ControlPlane) -> list[str]:
    found = []
    for kind in ("revisions", "deployments", "services", "configmaps", "pods"):
        for obj in plane.get("-n", NAMESPACE, kind)["items"]:
            if obj["metadata"]["name"] != "kube-root-ca.crt":
                found.append(f"{kind}/{obj['metadata']['name']}")
    return found
