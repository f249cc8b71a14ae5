"""One real control plane (harness/cluster.py) for the whole session: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok's fake node and Knative Serving's webhook and
controller, built from controlplane/ and started in a network namespace of their own.

And, for the tests that need pods to run (`real_node`: test_chart_on_node.py, test_one_host.py,
test_real_node.py, the skaffold tests), a second one with a real node, started the first time
one of them asks: its start costs half a minute, so they share it. test_real_node.py's
TEARDOWN_TEST takes it down and checks the host: it runs right after the last test that uses
the node, wherever that test sorts. The skaffold modules share one private podman
(`skaffold_engine`): the second's builds find the first's layers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from harness.cluster import ControlPlane, down, up
from harness.podman import Podman
from harness.podman import available as podman_available
from harness.skaffold import docker_api
from tests.support.real_node import Node, Snapshot, short_scale_to_zero

TEARDOWN_TEST = "test_real_node.py::test_down_leaves_nothing_behind"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    teardown = [i for i in items if i.nodeid.endswith(TEARDOWN_TEST)]
    users = [i for i in items if "real_node" in getattr(i, "fixturenames", ())]
    if teardown and users:
        items.remove(teardown[0])
        last = max(items.index(i) for i in users if i is not teardown[0])
        items.insert(last + 1, teardown[0])


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
    try:
        short_scale_to_zero(plane)
        found.measured["up"] = time.monotonic() - started
        found.measured.update(json.loads((state / "node" / "timings.json").read_text()))
        print(f"\nreal node: {json.dumps(found.measured)}")
        yield found
    finally:
        if not found.is_down:
            down(state)


@pytest.fixture(scope="session")
def skaffold_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One private podman behind a Docker API for the skaffold modules (harness/skaffold.py)."""
    assert podman_available() is None, podman_available()
    with Podman(tmp_path_factory.mktemp("skaffold-podman")) as podman, docker_api(podman) as env:
        yield env
