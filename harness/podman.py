"""A private podman engine for tests: its configuration, storage, secrets and containers live
under one directory that the test run owns, so nothing depends on (or changes) the machine's
own podman, and removing the directory removes everything.

The engine settings are those `make image` uses on this machine (harness/images.py: runc with
cgroupfs, ulimits root may set here); the images are built by the same code (`build_image`).
See /work/shared/reference/containers.md for the obstacles these settings get past.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import images as image_tool
from harness.processes import new_workdir

# Pods reach the host's loopback (our Redis, PostgreSQL, emulator) at this address through
# slirp4netns; the host is not on any bridge (netavark is not installed on these machines).
HOST_FROM_POD = "10.0.2.2"
POD_NETWORK = "slirp4netns:allow_host_loopback=true"


class PodmanError(RuntimeError):
    pass


def available() -> str | None:
    """Why podman cannot run here, or None when it can."""
    for tool in ("podman", "runc", "slirp4netns"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap test installs it)"
    return None


class Podman:
    """`podman` with private CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and registries.conf."""

    def __init__(self, root: Path | None = None) -> None:
        # Registered like every harness directory: stop_all() and the watchdog remove it.
        self.root = Path(root) if root else new_workdir("podman")
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("storage", "run", "tmp", "volumes"):
            (self.root / sub).mkdir(exist_ok=True)
        conf = self.root / "containers.conf"
        conf.write_text(
            image_tool.containers_conf_text()
            + f'tmp_dir = "{self.root / "tmp"}"\n'
            + f'volume_path = "{self.root / "volumes"}"\n'
        )
        storage = self.root / "storage.conf"
        storage.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.root / "storage"}"\n'
            f'runroot = "{self.root / "run"}"\n'
        )
        registries = self.root / "registries.conf"
        registries.write_text(image_tool.REGISTRIES_CONF)
        # The podman secrets made so far (harness/pods.py), by name, with their content.
        self.secrets: dict[str, str] = {}
        self.lock = threading.Lock()
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
        }

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    # --- images --------------------------------------------------------------------------------

    def build_image(
        self,
        tag: str,
        *,
        dockerfile: Path | None = None,
        context: Path | None = None,
        with_pgbouncer: bool = False,
        measure: bool = True,
    ) -> image_tool.Built:
        """Builds as `make image` does, into this engine's storage (base images made as stand-ins
        when no registry answers, from the stand-in cache)."""
        return image_tool.build(
            tag,
            dockerfile=dockerfile,
            context=context or image_tool.ROOT,
            env=self.env,
            with_pgbouncer=with_pgbouncer,
            measure=measure,
        )

    def build_from_binary(self, tag: str, binary: Path, *, user: str = "65532:65532") -> str:
        """An image holding one static binary, laid out as ko (which builds Knative's release
        images) lays it out: /ko-app/<name> as the entrypoint, non-root (distroless's nonroot
        user), nothing else. For the queue-proxy the tests build from the Knative module."""
        context = self.root / "contexts" / binary.name
        context.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, context / binary.name)
        (context / "Containerfile").write_text(
            "FROM scratch\n"
            f"COPY {binary.name} /ko-app/{binary.name}\n"
            f"USER {user}\n"
            f'ENTRYPOINT ["/ko-app/{binary.name}"]\n'
        )
        self("build", "--network", "host", "--tag", tag, str(context), timeout=300)
        return tag

    # --- containers ----------------------------------------------------------------------------

    def inspect(self, name: str) -> dict[str, Any]:
        (found,) = json.loads(self("container", "inspect", name).stdout)
        return dict(found)

    def pid(self, name: str) -> int:
        return int(self.inspect(name)["State"]["Pid"])

    def running(self, name: str) -> bool:
        return bool(self.inspect(name)["State"]["Running"])

    def exit_code(self, name: str) -> int:
        return int(self.inspect(name)["State"]["ExitCode"])

    def logs(self, name: str) -> str:
        result = self("logs", name, check=False)
        return result.stdout + result.stderr

    def signal(self, names: Sequence[str], sig: str = "TERM") -> None:
        """Delivers `sig` to each container's main process, as the kubelet does on a pod's
        deletion (podman pod stop would first take the pod's network away: see pods.py)."""
        self("kill", "--signal", sig, *names)

    def wait_exited(self, names: Sequence[str], timeout: float) -> dict[str, float]:
        """Seconds until each container exited (measured from now); raises if one has not
        within `timeout`."""
        started = time.monotonic()
        pending = list(names)
        exited: dict[str, float] = {}
        while pending:
            for name in list(pending):
                if not self.running(name):
                    exited[name] = time.monotonic() - started
                    pending.remove(name)
            if pending and time.monotonic() - started > timeout:
                raise PodmanError(f"{pending} still running {timeout:.0f} s after the signal")
            time.sleep(0.05)
        return exited

    def exec(
        self, name: str, *command: str, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Runs `command` in the container as its own user, with its own restrictions."""
        return self("exec", name, *command, check=check)

    def tcp_peers(self, name: str) -> set[tuple[str, int]]:
        return tcp_peers(self.process_ids(name))

    def status(self, name: str) -> dict[str, str]:
        """/proc/<pid>/status of the container's main process: Uid, Gid, CapEff, NoNewPrivs..."""
        lines = Path(f"/proc/{self.pid(name)}/status").read_text().splitlines()
        return dict(
            (key, value.strip()) for key, _, value in (line.partition(":") for line in lines)
        )

    def rss_bytes(self, name: str) -> int:
        """Resident memory of the container's processes (the sum of VmRSS), read from /proc."""
        total = 0
        for pid in self.process_ids(name):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def process_ids(self, name: str) -> list[int]:
        """Every host pid in the container: its main process and all its descendants."""
        root = self.pid(name)
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        found, queue = [], [root]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue.extend(children.get(pid, []))
        return found

    def close(self) -> None:
        """Removes every pod, container and image of this engine, then its directory."""
        self("pod", "rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        self("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        # The overlay driver keeps its directory (and any layer still in use) mounted: unmount
        # what lies under our root, deepest first, or rmtree stops at a busy mount. Never
        # `podman system reset`, which also acts on machine-wide state (networks).
        mounts = [
            line.split()[1].replace("\\040", " ")
            for line in Path("/proc/self/mounts").read_text().splitlines()
        ]
        for mountpoint in sorted(mounts, key=len, reverse=True):
            if Path(mountpoint).is_relative_to(self.root):
                subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def environment_for(values: Mapping[str, str]) -> list[str]:
    """`--env NAME=value` arguments, in a stable order."""
    return [arg for name in sorted(values) for arg in ("--env", f"{name}={values[name]}")]


def _address(hex_address: str) -> tuple[str, int]:
    """/proc/net/tcp{,6}'s `0100007F:1920` as ('127.0.0.1', 6432); IPv4-mapped IPv6 as IPv4."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address = ".".join(str(b) for b in raw[::-1])
    else:
        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
        flat = b"".join(words)
        if flat[:12] == b"\0" * 10 + b"\xff\xff":
            address = ".".join(str(b) for b in flat[12:])
        else:
            address = ":".join(flat[i : i + 2].hex() for i in range(0, 16, 2))
    return address, int(port, 16)


def tcp_peers(pids: Sequence[int]) -> set[tuple[str, int]]:
    """The remote ends of the established TCP connections the processes `pids` hold, read from
    /proc (their network namespace's tables and their own file descriptors)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    peers: set[tuple[str, int]] = set()
    for pid in pids[:1]:
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    fields = line.split()
                    established = fields[3] == "01"
                    if established and fields[9] in inodes:
                        peers.add(_address(fields[2]))
    return peers
