"""The network namespace each control plane runs in, joined to the host by a veth pair.

The first `ip netns add` on a machine also bind-mounts /run/netns onto itself (iproute2 makes it
a shared mount, so that namespace handles propagate), and `ip netns del` never takes that mount
away. The harness leaves the machine as it found it: when the mount was not there before a
control plane's namespace was added (recorded in its state directory, for a `down` in a later
process) and no namespace is left in it at teardown (another plane's, podman's netns-*), the
mount goes. A mount the harness made is marked machine-wide, so that the last of several control
planes removes it whichever started first; one that was there before is never touched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from harness.cluster import cgroups
from harness.cluster.plane import (
    ClusterError,
)

# Private addresses for the namespaces' veth pairs: 10.254.N.0/30, one N per control plane.
SUBNET_PREFIX = "10.254."
_ALLOCATION_LOCK = Path("/run/lock/userapi-cluster-net.lock")
_NETNS_DIR = Path("/run/netns")  # where `ip netns add` puts each namespace's handle
_ABANDONED_AFTER_SECONDS = 120
# Written when the harness turns /run/netns into a mount point: the mount's ids, so that a mount
# someone else made later at the same place is not taken for ours.
_MOUNT_MARKER = Path("/run/lock/userapi-netns-mount")
_MOUNT_RECORD = "netns-mount"  # in the state directory: "ours" or "theirs"


def names(state: Path) -> tuple[str, str, str]:
    tag = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    return f"userapi-{tag}", f"ua{tag}h", f"ua{tag}n"  # netns, host veth, namespace veth (<= 15)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def network_up(state: Path) -> tuple[str, str]:
    """Create (or find) this state directory's namespace; (netns name, its address)."""
    netns, host_veth, ns_veth = names(state)
    saved = state / "network.json"
    if saved.exists() and ip("netns", "exec", netns, "true", check=False).returncode == 0:
        return netns, str(json.loads(saved.read_text())["address"])
    if os.geteuid() != 0:
        raise ClusterError("the control plane runs in a network namespace: run as root")
    network_down(state)
    _ALLOCATION_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with _ALLOCATION_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two control planes starting at once get two subnets
        sweep_abandoned()
        used = ip("-4", "-o", "addr", "show").stdout
        free = next(
            (n for n in range(256) if f" {SUBNET_PREFIX}{n}." not in used),
            None,
        )
        if free is None:
            raise ClusterError(f"no free {SUBNET_PREFIX}N.0/30 subnet for the namespace")
        host, inside = f"{SUBNET_PREFIX}{free}.1", f"{SUBNET_PREFIX}{free}.2"
        was_there = _netns_mounts()[0]
        try:
            ip("netns", "add", netns)
        finally:
            _record_netns_mount(state, was_there)
        ip("link", "add", host_veth, "type", "veth", "peer", "name", ns_veth)
        ip("link", "set", ns_veth, "netns", netns)
        ip("addr", "add", f"{host}/30", "dev", host_veth)
        ip("link", "set", host_veth, "up")
        for command in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{inside}/30", "dev", ns_veth),
            ("link", "set", ns_veth, "up"),
        ):
            ip("netns", "exec", netns, "ip", *command)
    saved.write_text(json.dumps({"netns": netns, "address": inside, "host": host}))
    return netns, inside


def sweep_abandoned(older_than: float = _ABANDONED_AFTER_SECONDS) -> None:
    """Deletes the namespaces (and veth pairs) of control planes whose owner was killed before
    it could clean up (a SIGKILLed pytest): ours by name, with no process left in them but a
    real node's leftovers (its runc shims and pods, found under the cgroup root named like the
    namespace: cgroups.py), and older than any start still spawning its first process into
    one. Those leftovers are killed and their cgroups removed first."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        netns = line.split()[0] if line.split() else ""
        if not netns.startswith("userapi-"):
            continue
        try:
            age = time.time() - (_NETNS_DIR / netns).stat().st_mtime
        except OSError:
            continue
        inside = {int(p) for p in ip("netns", "pids", netns, check=False).stdout.split()}
        node_leftovers = cgroups.pids(netns)
        if age < older_than or inside - node_leftovers:
            continue
        if cgroups.kill_all(netns):
            continue
        cgroups.remove(netns)
        tag = netns.removeprefix("userapi-")
        ip("link", "del", f"ua{tag}h", check=False)
        ip("netns", "del", netns, check=False)


def network_down(state: Path) -> None:
    netns, host_veth, _ = names(state)
    ip("link", "del", host_veth, check=False)  # deletes its peer in the namespace too
    ip("netns", "del", netns, check=False)
    (state / "network.json").unlink(missing_ok=True)
    record = state / _MOUNT_RECORD
    if record.exists():
        if record.read_text() == "ours":
            _ALLOCATION_LOCK.parent.mkdir(parents=True, exist_ok=True)
            with _ALLOCATION_LOCK.open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # no plane is adding its namespace meanwhile
                _unmount_netns_dir_if_unused()
        record.unlink()


def _netns_mounts() -> tuple[list[str], bool]:
    """The ids of the mounts on /run/netns itself (two when the bind mount propagated back onto
    its own place), and whether anything (a namespace's handle) is mounted below it."""
    on, below = [], False
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(_NETNS_DIR):
            on.append(fields[0])
        elif fields[4].startswith(f"{_NETNS_DIR}/"):
            below = True
    return on, below


def _record_netns_mount(state: Path, was_there: list[str]) -> None:
    """After this plane's `ip netns add`: is the mount on /run/netns the harness's to remove?"""
    now = _netns_mounts()[0]
    if not was_there:
        _MOUNT_MARKER.write_text(" ".join(now))
        ours = True
    else:
        try:
            ours = _MOUNT_MARKER.read_text().split() == was_there
        except OSError:
            ours = False
    (state / _MOUNT_RECORD).write_text("ours" if ours else "theirs")


def _unmount_netns_dir_if_unused() -> None:
    for _ in range(4):  # the bind mount, and the copy propagation may have stacked on it
        on, below = _netns_mounts()
        if not on:
            _MOUNT_MARKER.unlink(missing_ok=True)
            return
        # Without MNT_DETACH, umount also refuses while a handle is mounted below.
        if below or any(_NETNS_DIR.iterdir()):
            return
        if subprocess.run(["umount", str(_NETNS_DIR)], capture_output=True, check=False).returncode:
            return
