"""The control plane's network namespaces: one left behind by a killed run is removed by the
next start, and nothing in use is touched; the /run/netns mount the first `ip netns add` makes
goes when the harness made it and no namespace is left."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import network

pytestmark = pytest.mark.cluster


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listing.stdout.splitlines() if line.split()}


@pytest.fixture
def made() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _add(made: list[str], prefix: str = "userapi-") -> str:
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    made.append(name)
    return name


def test_an_abandoned_namespace_is_swept_and_nothing_else(made: list[str]) -> None:
    abandoned, other = _add(made), _add(made, prefix="someone-else-")
    tag = abandoned.removeprefix("userapi-")
    subprocess.run(
        ["ip", "link", "add", f"ua{tag}h", "type", "veth", "peer", "name", f"ua{tag}n",
         "netns", abandoned], check=True,
    )  # fmt: skip
    in_use = _add(made)
    sleeper = subprocess.Popen(["ip", "netns", "exec", in_use, "sleep", "60"])
    try:
        network.sweep_abandoned()  # all just made: a start may still be spawning into them
        assert {abandoned, other, in_use} <= _namespaces()
        network.sweep_abandoned(older_than=0)
        left = _namespaces()
        assert abandoned not in left
        assert {other, in_use} <= left
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f"ua{tag}h" not in links
    finally:
        sleeper.kill()
        sleeper.wait()


ROOT = Path(__file__).resolve().parents[2]
# One step of a control plane's network, each in its own process: `down` must learn from the
# state directory alone whether the /run/netns mount was there before `up`. The marker the
# harness keeps machine-wide in /run/lock goes to the test's directory instead, so that this
# test cannot make the machine's own mount look like the harness's.
STEP = """
import sys
from pathlib import Path
from harness.cluster import network
action, state = sys.argv[1], Path(sys.argv[2])
network._MOUNT_MARKER = state.parent / "marker"
state.mkdir(exist_ok=True)
if action == "up":
    network.network_up(state)
    print((state / "netns-mount").read_text())
else:
    network.network_down(state)
    print("recorded" if (state / "netns-mount").exists() else "forgotten")
"""


def test_the_netns_mount_goes_when_the_harness_made_it_and_nothing_lives_in_it(
    tmp_path: Path,
) -> None:
    # A machine where /run/netns is not a mount yet, in a mount namespace of the test's own
    # (what is unmounted there stays mounted for the machine): a fresh /run, with the machine's
    # /run/lock moved in (the subnet lock other planes take). Namespaces made in it vanish with
    # it, whatever happens to the test.
    (tmp_path / "step.py").write_text(STEP)
    other = f"someone-else-{secrets.token_hex(4)}"
    script = textwrap.dedent(f"""\
        set -eu
        cd {tmp_path}
        step() {{ {sys.executable} step.py "$@"; }}
        mounts() {{ echo "$1: $(awk '$5 == "/run/netns"' /proc/self/mountinfo | wc -l)"; }}
        trap 'step down a >/dev/null; step down b >/dev/null' EXIT
        # The machine's netns mounts would still be listed under a new /run: detach them here.
        while [ "$(mounts x)" != "x: 0" ]; do umount --lazy /run/netns; done
        mkdir lock && mount --bind /run/lock lock
        mount -t tmpfs -o mode=0755 userapi-test /run
        mkdir /run/lock && mount --move lock /run/lock
        mounts fresh
        step up a; mounts "up a"
        step down a; mounts "down a"
        step up a; ip netns add {other}; step down a; mounts "another namespace lives"
        ip netns del {other}; step up b; step down b; mounts "the last one goes"
        ip netns add {other}; ip netns del {other}; mounts "made by ip, not the harness"
        step up a; step down a; mounts "down a"
    """)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "fresh: 0",
        "ours",
        "up a: 1",
        "forgotten",
        "down a: 0",  # left as found
        "ours",
        "forgotten",
        "another namespace lives: 1",  # kept for it
        "ours",  # the harness's mount still, for a later plane to remove
        "forgotten",
        "the last one goes: 0",
        "made by ip, not the harness: 1",
        "theirs",
        "forgotten",
        "down a: 1",  # there before: never removed
    ]
