"""One real control plane (harness/cluster.py) for the whole session: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok's fake node and Knative Serving's webhook and
controller, built from controlplane/ and started in a network namespace of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.cluster import ControlPlane, down, up


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
