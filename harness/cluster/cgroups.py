"""The real node's cgroup root: /<name> in every cgroup hierarchy, named like the control plane's
network namespace. kubelet puts every pod under <name>/kubepods and containerd's runc shims go to
<name>/shims, so each process the node leaves behind, whatever killed its parents, is found here
by its cgroup, and the directories are removed once they are empty."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_MOUNTS = Path("/sys/fs/cgroup")
SHIMS = "shims"


def hierarchies() -> list[Path]:
    """The mount points of every cgroup hierarchy (v1 controllers, name=systemd, unified)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        mountpoint = Path(fields[4])
        if fstype in ("cgroup", "cgroup2") and mountpoint.is_relative_to(CGROUP_MOUNTS):
            found.append(mountpoint)
    return sorted(set(found))


def make_root(name: str) -> None:
    """/<name> and /<name>/shims in every hierarchy."""
    for hierarchy in hierarchies():
        for directory in (hierarchy / name, hierarchy / name / SHIMS):
            directory.mkdir(exist_ok=True)
            # A new cpuset cgroup starts with no CPUs and no memory nodes: nothing could join.
            for setting in ("cpuset.cpus", "cpuset.mems"):
                path = directory / setting
                if path.exists() and not path.read_text().strip():
                    path.write_text((directory.parent / setting).read_text())


def directories(name: str) -> list[Path]:
    """Every cgroup directory under the root, deepest first."""
    found: list[Path] = []
    for hierarchy in hierarchies():
        top = hierarchy / name
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def pids(name: str) -> set[int]:
    found: set[int] = set()
    for directory in directories(name):
        with contextlib.suppress(OSError):
            found |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
    return found


def kill_all(name: str, timeout: float = 10) -> set[int]:
    """SIGKILL every process under the root until none is left; returns the survivors."""
    deadline = time.monotonic() + timeout
    while (left := pids(name)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return pids(name)


def remove(name: str) -> None:
    for directory in directories(name):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()
