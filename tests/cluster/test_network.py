"""The control plane's network namespaces: one left behind by a killed run is removed by the
next start, and nothing in use is touched."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

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
