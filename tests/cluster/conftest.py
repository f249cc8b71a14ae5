"""One real control plane (harness/cluster.py) for the whole session: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok's fake node and Knative Serving's webhook and
controller, built from controlplane/ and started in a network namespace of their own.

And, for the tests that need pods to run (test_chart_on_node.py, test_real_node.py), a second
one with a real node, started the first time one of them asks: its start costs half a minute,
so they share it. test_real_node.py's last test takes it down and checks the host, so its tests
run after every other module's (pytest_collection_modifyitems). The skaffold modules share one
private podman (`skaffold_engine`): the second's builds find the first's layers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import ControlPlane, down, up
from harness.podman import Podman
from harness.podman import available as podman_available
from harness.skaffold import docker_api
from tests.support.real_node import Node, Snapshot


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    state = tmp_path_factory.mktemp("control-plane")
    plane = up(state)
    try:
        yield plane
    finally:
        down(state)


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for one test, deleted (with everything in it) afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    before = Snapshot.take()
    state = tmp_path_factory.mktemp("real-node")
    started = time.monotonic()
    plane = up(state, node=True)
    found = Node(plane, state, before)
    found.measured["up"] = time.monotonic() - started
    found.measured.update(json.loads((state / "node" / "timings.json").read_text()))
    print(f"\nreal node: {json.dumps(found.measured)}")
    try:
        yield found
    finally:
        if not found.is_down:
            down(state)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_real_node.py last (its last test takes the shared node down), in its own order."""
    last = [item for item in items if Path(str(item.fspath)).name == "test_real_node.py"]
    if last:
        items[:] = [item for item in items if item not in last] + last


@pytest.fixture(scope="session")
def skaffold_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One private podman behind a Docker API for the skaffold modules (harness/skaffold.py)."""
    assert podman_available() is None, podman_available()
    with Podman(tmp_path_factory.mktemp("skaffold-podman")) as podman, docker_api(podman) as env:
        yield env
