"""Real skaffold and Helm (built from their Go modules by controlplane/build) run on a copy of
this checkout, with a global config of their own: no usage metrics, no update check, no survey,
nothing written to the caller's ~/.skaffold or ~/.config/helm.

    tool = Skaffold.create(tmp_path)          # copies the checkout; nothing starts
    tool.run("render", "-p", "local", ...)    # a CompletedProcess; raises on failure

skaffold reads the images it built through a Docker API: with no Docker engine, `docker_api`
serves podman's (a private podman, harness/podman.py) for `skaffold build` and `run`.

Importing this module starts nothing and builds nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.cluster import build
from harness.podman import Podman
from harness.processes import spawn, stop_process

ROOT = Path(__file__).resolve().parents[1]

# skaffold asks once whether it may send usage metrics and says yes when nobody answers; these
# say no before it asks, and turn off its update check and survey prompt (both would reach out).
GLOBAL_CONFIG = {
    "global": {
        "collect-metrics": False,
        "update-check": False,
        "survey": {"disable-prompt": True},
    },
    "kubeContexts": [],
}


class SkaffoldError(RuntimeError):
    pass


def checkout_files() -> list[str]:
    """The checkout's files as a clean clone would have them, plus new files not yet committed
    (never ignored ones: no .venv, no caches)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def kubeconfig(contexts: Sequence[str], server: str = "https://127.0.0.1:9") -> dict[str, Any]:
    """A kubeconfig whose contexts are named like the clusters of docs/deploying.md. The server
    is a closed loopback port: commands that need no cluster never notice it."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "none", "cluster": {"server": server}}],
        "users": [{"name": "none", "user": {"token": "unused"}}],
        "contexts": [
            {"name": name, "context": {"cluster": "none", "user": "none"}} for name in contexts
        ],
        "current-context": contexts[0],
    }


@dataclass(frozen=True)
class Skaffold:
    workdir: Path  # the copy of the checkout skaffold runs in
    bin: Path  # skaffold, helm, kubectl (controlplane/build)
    home: Path  # HOME for skaffold and Helm (config, plugins, caches)
    kubeconfig: Path

    @classmethod
    def create(
        cls,
        tmp: Path,
        contexts: Sequence[str] = ("kind-knative",),
        kubeconfig_path: Path | None = None,
    ) -> Skaffold:
        """A copy of the checkout, and a kubeconfig: `kubeconfig_path` (a real cluster's), or
        one with `contexts` that reach nothing."""
        components = build()
        workdir, home = tmp / "checkout", tmp / "home"
        for name in checkout_files():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        (home / ".skaffold").mkdir(parents=True)
        (home / ".skaffold" / "config").write_text(yaml.safe_dump(GLOBAL_CONFIG))
        config = home / ".kube" / "config"
        config.parent.mkdir()
        if kubeconfig_path is not None:
            shutil.copy2(kubeconfig_path, config)
        else:
            config.write_text(yaml.safe_dump(kubeconfig(contexts)))
        return cls(workdir, components / "bin", home, config)

    def in_context(self, context: str) -> dict[str, str]:
        """Environment for running in `context` as the current one (`skaffold diagnose` has no
        --kube-context; profiles are activated by the current context)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["current-context"] = context
        path = self.kubeconfig.with_name(f"config-{context}")
        path.write_text(yaml.safe_dump(config))
        return {"KUBECONFIG": str(path)}

    def env(
        self, extra: Mapping[str, str] | None = None, *, offline: bool = True
    ) -> dict[str, str]:
        extra = dict(extra or {})
        path = extra.pop("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        env = {
            "PATH": f"{self.bin}{os.pathsep}{path}",
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "SKAFFOLD_UPDATE_CHECK": "false",
            "SKAFFOLD_INTERACTIVE": "false",
            # Helm's config, cache and plugins (skaffold installs its post-renderer plugin
            # there for Helm 4) stay in this HOME too.
            "HELM_CONFIG_HOME": str(self.home / ".config" / "helm"),
            "HELM_CACHE_HOME": str(self.home / ".cache" / "helm"),
            "HELM_DATA_HOME": str(self.home / ".local" / "share" / "helm"),
        }
        if offline:
            # Anything that would reach beyond this machine (a registry, a metrics endpoint)
            # goes to a closed loopback port and fails at once. An image build (`make image`)
            # needs PyPI, so `build` and `run` are not offline.
            env.update(
                HTTPS_PROXY="http://127.0.0.1:9",
                HTTP_PROXY="http://127.0.0.1:9",
                NO_PROXY="127.0.0.1,localhost",
            )
        # What `make image` needs from the caller: the CA bundle a TLS-intercepting proxy
        # requires (pip inside the build), and where stand-in base images are cached.
        for name in ("LANG", "TMPDIR", "PIP_CERT", "USERAPI_CACHE", "USERAPI_IMAGE_CACHE"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(extra)
        return env

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
        offline: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin / "skaffold"), *args],
            cwd=self.workdir, env=self.env(env, offline=offline), capture_output=True, text=True,
            timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise SkaffoldError(
                f"skaffold {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
            )
        return result


def _answers(path: Path) -> bool:
    """podman's Docker API answers /_ping on the socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
        except OSError:
            return False


@contextlib.contextmanager
def docker_api(podman: Podman, timeout: float = 30) -> Iterator[dict[str, str]]:
    """podman's Docker-compatible API on a socket of its own, over podman's private storage: the
    environment (DOCKER_HOST and podman's settings) in which skaffold and `make image` see the
    same images."""
    path = podman.root / "docker.sock"
    process = spawn(
        ["podman", "system", "service", "--time=0", f"unix://{path}"],
        podman.root / "docker-api.log",
        env=podman.env,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(path):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (podman.root / "docker-api.log").read_text()[-2000:]
                raise SkaffoldError(f"podman system service did not answer:\n{log}")
            time.sleep(0.1)
        names = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF")
        # A docker CLI would answer through this socket, and `make image` would then build
        # with it; podman builds with its own settings (runc, cgroupfs, stand-in bases).
        path_dirs = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        no_docker = os.pathsep.join(d for d in path_dirs if not (Path(d) / "docker").exists())
        yield {
            "DOCKER_HOST": f"unix://{path}",
            "PATH": no_docker,
            **{name: podman.env[name] for name in names},
        }
    finally:
        stop_process(process)
