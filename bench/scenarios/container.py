"""The container: image sizes, and cold start from `podman run` to the first authenticated,
cached 200 of get-user, against a FastAPI hello image built the same way in the same run
(bench/yardsticks/hello.Dockerfile); then the container's RSS idle and under load.

Both images are built here by `make image`'s code into a private podman engine (stand-in
bases when no registry answers). Both containers run as the chart runs the app: read-only root,
uid 10001, no capabilities, no new privileges, /tmp a tmpfs. Host networking, so that the
figure is the container's start and the app's, not a network set-up that a kubelet does before
the container starts; userapi reads from the bench's Redis, PgBouncer and Auth0 emulator.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from userapi.domain.users import user_path

from bench.config import Profile
from bench.load import wrk
from bench.scenario import Result, Scenario, Verdict, ratio_at_most
from bench.scenarios.coldstart import summarize
from bench.stack import ROOT, USER, Stack, cache_outcomes
from harness.podman import Podman, environment_for
from harness.processes import free_port

USERAPI_TAG = "localhost/userapi:bench"
HELLO_TAG = "localhost/userapi-hello:bench"
RUN_FLAGS = [
    "--network", "host", "--read-only", "--tmpfs", "/tmp:size=16m", "--user", "10001:10001",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
]  # fmt: skip


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    return await asyncio.to_thread(_run, stack, profile, workdir)


def _run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    with Podman(workdir / "podman") as podman:
        fresh = podman.build_image(USERAPI_TAG)
        cached = podman.build_image(USERAPI_TAG, measure=False)  # nothing changed: all cached
        hello = podman.build_image(
            HELLO_TAG, dockerfile=ROOT / "bench" / "yardsticks" / "hello.Dockerfile"
        )
        env = stack.env()
        stack.userapi(env).stop()  # Redis holds the profile and token, as after an earlier pod
        samples: dict[str, list[float]] = {"userapi": [], "fastapi-hello": []}
        for attempt in range(profile.cold_runs):
            order = ["userapi", "fastapi-hello"][:: 1 if attempt % 2 == 0 else -1]
            for name in order:
                if name == "userapi":
                    seconds, _ = _cold_start_userapi(podman, stack, env, keep=False)
                else:
                    seconds = _cold_start_hello(podman)
                samples[name].append(seconds * 1000)
        _, container = _cold_start_userapi(podman, stack, env, keep=True)
        try:
            memory = _memory(podman, container, stack, profile, workdir)
        finally:
            podman("rm", "--force", "--time", "0", container, check=False)
    summary = {name: summarize(values) for name, values in samples.items()}
    return {
        "runs": profile.cold_runs,
        "engine": fresh.engine,
        "stand_in_bases": fresh.stand_in_bases,
        "build_seconds": {
            "fresh": round(fresh.seconds, 1),
            "cached": round(cached.seconds, 1),
            "hello_fresh": round(hello.seconds, 1),
        },
        "image_mb": {
            "total": _mb(fresh.sizes.total),
            "base": _mb(fresh.sizes.base),
            "app_layer": _mb(fresh.sizes.app_layer),
            "app_layer_compressed": _mb(fresh.sizes.app_layer_compressed),
        },
        "hello_image_mb": {
            "total": _mb(hello.sizes.total),
            "app_layer": _mb(hello.sizes.app_layer),
        },
        "cold_start": summary,
        "cold_start_ratio_to_hello": round(
            summary["userapi"]["median_ms"] / summary["fastapi-hello"]["median_ms"], 3
        ),
        "rss_mib": memory,
    }


def _mb(size: int) -> float:
    return round(size / 1e6, 1)


def _start(podman: Podman, args: list[str]) -> tuple[subprocess.Popen[str], float]:
    """`podman run -d ...` started now; the clock starts just before its exec."""
    started = time.perf_counter()
    process = subprocess.Popen(
        ["podman", "run", "-d", *args],
        env=podman.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, started


def _first_200(
    url: str, headers: dict[str, str], process: subprocess.Popen[str], started: float
) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=10).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        if process.poll() not in (None, 0):
            raise RuntimeError(f"podman run failed: {process.communicate()[1]}")
        time.sleep(0.002)
    raise RuntimeError(f"{url} never answered 200")


def _container_id(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"podman run failed: {err}")
    return out.strip()


def _cold_start_userapi(
    podman: Podman, stack: Stack, env: dict[str, str], *, keep: bool
) -> tuple[float, str]:
    port = free_port()
    container_env = {**env, "PORT": str(port)}
    process, started = _start(
        podman,
        [
            *RUN_FLAGS,
            *environment_for(container_env),
            USERAPI_TAG,
            "get-user",
            "--host",
            "127.0.0.1",
        ],
    )
    url = f"http://127.0.0.1:{port}{user_path(USER)}"
    seconds = _first_200(url, stack.auth, process, started)
    container = _container_id(process)
    # The request's log line is written just after its response: the client may be ahead.
    deadline = time.monotonic() + 5
    while not (outcomes := cache_outcomes(podman.logs(container))):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if outcomes.get("hit") != 1:
        podman("rm", "--force", "--time", "0", container, check=False)
        raise RuntimeError(f"the container's first read was not a cache hit ({outcomes})")
    if not keep:
        podman("rm", "--force", "--time", "0", container, check=False)
    return seconds, container


def _cold_start_hello(podman: Podman) -> float:
    port = free_port()
    # The image's entrypoint ends in `--host 0.0.0.0 --port 8080`; the last of each wins.
    args = [*RUN_FLAGS, HELLO_TAG, "--host", "127.0.0.1", "--port", str(port)]
    process, started = _start(podman, args)
    seconds = _first_200(f"http://127.0.0.1:{port}/hello", {}, process, started)
    podman("rm", "--force", "--time", "0", _container_id(process), check=False)
    return seconds


def _memory(
    podman: Podman, container: str, stack: Stack, profile: Profile, workdir: Path
) -> dict[str, float]:
    """RSS of the container's processes: idle after its first request, and the most seen
    while wrk loads it at 50 connections."""
    idle = podman.rss_bytes(container)
    port = _env_port(podman, container)
    peak = idle

    async def load() -> None:
        await wrk(
            f"http://127.0.0.1:{port}{user_path(USER)}",
            connections=50,
            seconds=profile.warm_seconds,
            headers=stack.auth,
            workdir=workdir,
        )

    async def sample() -> None:
        nonlocal peak
        task = asyncio.create_task(load())
        while not task.done():
            peak = max(peak, podman.rss_bytes(container))
            await asyncio.sleep(0.1)
        await task

    asyncio.run(sample())
    return {"idle": round(idle / 2**20, 1), "under_load": round(peak / 2**20, 1)}


def _env_port(podman: Podman, container: str) -> int:
    for item in podman.inspect(container)["Config"]["Env"]:
        name, _, value = item.partition("=")
        if name == "PORT":
            return int(value)
    raise RuntimeError("the container has no PORT")


def judge(box: Result) -> list[Verdict]:
    layer = box["image_mb"]["app_layer"]
    ratio = box["cold_start_ratio_to_hello"]
    return [
        Verdict(
            target="image app layer",
            goal="<= 75 MB uncompressed",
            measured=f"{layer:g} MB",
            met=layer <= 75,
        ),
        ratio_at_most("container cold start", 1.0, "FastAPI hello image", ratio),
    ]


def render(box: Result) -> list[str]:
    image, cold, rss = box["image_mb"], box["cold_start"], box["rss_mib"]
    bases = ", ".join(box["stand_in_bases"])
    on = f" on stand-in bases made from Debian packages ({bases})" if bases else ""
    return [
        "",
        f"**Container** (built by {box['engine']}{on}): build {box['build_seconds']['fresh']:g} s "
        f"from a fresh engine, {box['build_seconds']['cached']:g} s with nothing changed. "
        f"Image {image['total']:g} MB, of which base {image['base']:g} MB and the app layer "
        f"{image['app_layer']:g} MB ({image['app_layer_compressed']:g} MB gzip-compressed); the "
        f"FastAPI hello image {box['hello_image_mb']['total']:g} MB. Cold start, `podman run` to "
        f"the first authenticated cached 200 of get-user, {box['runs']} runs each, interleaved: "
        f"userapi median {cold['userapi']['median_ms']:.0f} ms (min "
        f"{cold['userapi']['min_ms']:.0f}, max {cold['userapi']['max_ms']:.0f}), FastAPI hello "
        f"image median {cold['fastapi-hello']['median_ms']:.0f} ms: "
        f"{box['cold_start_ratio_to_hello']:.2f} x. Container RSS {rss['idle']:g} MiB idle, "
        f"{rss['under_load']:g} MiB at most under 50 connections.",
    ]


SCENARIO = Scenario("container", run=run, render=render, judge=judge)
