"""skaffold against the session's real node (tests/cluster/conftest.py's `real_node` and
`skaffold_engine`): the environment a developer's `make cluster` gives it, and the release
namespace's life around each run."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping

from harness.cluster import ControlPlane, chart_values
from harness.skaffold import Skaffold
from tests.support.real_node import Node

NAMESPACE = "userapi"  # the release's, from skaffold.yaml (and the chart test's)


def skaffold_env(tool: Skaffold, node: Node, engine: Mapping[str, str]) -> dict[str, str]:
    """What a developer has after `make cluster` and `export KUBECONFIG=.dev/cluster/kubeconfig`,
    in the copy of the checkout skaffold runs in: the chart's images imported into the node
    and the values file naming them beside the kubeconfig (`make cluster` writes both), so
    skaffold.yaml's make-cluster profile activates. Plus podman's Docker API (`engine`) and
    what `make image LOAD=skaffold` needs there: the venv with the harness's dependencies (the
    copy has none) and the node's state directory (the copy's .dev/cluster holds only those
    two files)."""
    layout = tool.workdir / ".dev" / "cluster"
    layout.mkdir(parents=True, exist_ok=True)
    shutil.copy2(chart_values(node.plane), layout / "values.yaml")
    shutil.copy2(tool.kubeconfig, layout / "kubeconfig")
    return {
        **engine,
        "KUBECONFIG": str(layout / "kubeconfig"),
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
