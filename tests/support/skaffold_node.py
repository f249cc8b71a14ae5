"""skaffold against the session's real node (tests/cluster/conftest.py's `real_node` and
`skaffold_engine`): the environment a developer's `make cluster` gives it, and the release
namespace's life around each run."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

from harness.cluster import ControlPlane
from harness.skaffold import Skaffold
from tests.support.real_node import Node

NAMESPACE = "userapi"  # the release's, from skaffold.yaml (and the chart test's)


def skaffold_env(node: Node, engine: Mapping[str, str]) -> dict[str, str]:
    """podman's Docker API (`engine`), and what `make image LOAD=skaffold` needs to import
    each build into this node as `make cluster`'s: the venv with the harness's dependencies
    (the copy of the checkout has none) and the node's state directory (not the copy's
    .dev/cluster)."""
    return {
        **engine,
        "NO_PROXY": f"127.0.0.1,localhost,{node.plane.address}",
        "VENV": sys.prefix,
        "CLUSTER_STATE": str(node.state),
    }


def wait_namespace_gone(plane: ControlPlane, timeout: float = 180) -> None:
    """The release namespace of an earlier module (it deletes it without waiting): a release
    installed while it terminates would be refused."""
    deadline = time.monotonic() + timeout
    while plane.kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"namespace {NAMESPACE} still terminating"
        time.sleep(1)


def delete_release(tool: Skaffold, plane: ControlPlane, env: Mapping[str, str]) -> None:
    tool.run("delete", "-p", "local", env=env, check=False, offline=False)
    plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    plane.kubectl("delete", "pods", "--all", "-n", NAMESPACE, "--grace-period=1", "--wait=false",
                  check=False)  # fmt: skip
