"""The chart's images on the real node, without a registry: the userapi image (built from this
tree as `make image` builds it), the PgBouncer sidecar's, and the local profile's in-cluster
Redis and PostgreSQL. Each is saved from a private podman as an archive and imported into the
node's containerd (`ctr import`), where kubelet finds it and never pulls.

Where no registry answers, the bases are harness/images.py's stand-ins made from Debian
packages, and they keep stand-in names on the node too (`kind.local/userapi-standin/...`),
never the official image's. Every name is a `kind.local/...` one: Knative resolves the tag of
any other registry's image at that registry, and a revision it cannot resolve never starts.

Archives are cached under the user's cache directory, keyed by what went into them (the
Dockerfile and the files it copies; a stand-in's recipe), so a second cluster imports them
without running podman. `values()` is what a release needs to use them.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import images as image_tool
from harness.cluster.node import import_image
from harness.cluster.node_images import cache_dir, save_archive
from harness.cluster.plane import ClusterError, ControlPlane

# The app's name on the node; tests/support/cluster.py's OFFLINE_IMAGES uses it too.
APP_IMAGE = "kind.local/userapi:dev"
HELLO_IMAGE = "kind.local/userapi-hello:bench"
NODE_REGISTRY = "kind.local/"
STAND_IN_PATH = "userapi-standin/"
RECIPE = "1"  # bump to rebuild every cached archive
# What the Dockerfile copies (.dockerignore lets nothing else in).
APP_INPUTS = ("Dockerfile", "requirements.lock", "requirements-build.lock", "pyproject.toml",
              "README.md")  # fmt: skip


@dataclass(frozen=True)
class ChartImage:
    role: str  # app, pgbouncer, redis, postgres
    source: str  # the name the Dockerfile or the chart's values use
    name: str  # its name on the node
    key: str
    stand_in: bool
    dockerfile: Path | None = None  # built from this tree: the project's Dockerfile when None

    @property
    def archive(self) -> Path:
        stem = re.sub(r"[^A-Za-z0-9.-]+", "_", self.name)
        return cache_dir() / f"{stem}-{self.key}.tar"


def node_name(source: str, *, stand_in: bool) -> str:
    """`kind.local/[userapi-standin/]<last path component>:<tag>`."""
    return NODE_REGISTRY + (STAND_IN_PATH if stand_in else "") + source.rsplit("/", 1)[-1]


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def app_key() -> str:
    root = image_tool.ROOT
    files = [root / name for name in APP_INPUTS]
    files += sorted(p for p in (root / "services").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts)  # fmt: skip
    return _built_key(files)


def hello_image() -> ChartImage:
    """bench/yardsticks/hello.Dockerfile's FastAPI hello app, built as the app's image is (same
    base, same locked dependencies), named for the node: the yardstick of bench's knative
    scenario."""
    root = image_tool.ROOT
    dockerfile = root / "bench" / "yardsticks" / "hello.Dockerfile"
    files = [dockerfile, root / "bench" / "yardsticks" / "hello_app.py",
             root / "requirements.lock", root / "requirements-build.lock"]  # fmt: skip
    return ChartImage("hello", HELLO_IMAGE, HELLO_IMAGE, _built_key(files), False, dockerfile)


def _built_key(files: list[Path]) -> str:
    root = image_tool.ROOT
    base = image_tool.python_base()
    stand_in = image_tool.stand_ins()[base]
    sources = image_tool.machine_apt_sources(stand_in.suite)
    parts: list[str | bytes] = [RECIPE, base, stand_in.key(sources)]
    for path in files:
        parts += [str(path.relative_to(root)), path.read_bytes()]
    return _digest(*parts)


def chart_images() -> list[ChartImage]:
    """The four images, named for the node. The bases count as stand-ins here: the node can
    reach no registry, and neither can the machines this runs on (harness/images.py)."""
    stand_ins = image_tool.stand_ins()
    found = [ChartImage("app", APP_IMAGE, APP_IMAGE, app_key(), stand_in=False)]
    redis, postgres = image_tool.local_backing_images()
    for role, source in (("pgbouncer", image_tool.pgbouncer_image()), ("redis", redis),
                         ("postgres", postgres)):  # fmt: skip
        stand_in = stand_ins[source]
        key = _digest(RECIPE, stand_in.key(image_tool.machine_apt_sources(stand_in.suite)))
        found.append(ChartImage(role, source, node_name(source, stand_in=True), key, True))
    return found


def archives(images: list[ChartImage]) -> list[Path]:
    """Each image's archive, built (in a private podman) when not cached."""
    missing = [image for image in images if not image.archive.exists()]
    if missing:
        build(missing)
    return [image.archive for image in images]


def build(images: list[ChartImage]) -> None:
    from harness.podman import Podman  # the image tooling only when building

    with Podman() as podman:
        for image in images:
            if not image.stand_in:
                podman.build_image(image.name, dockerfile=image.dockerfile, measure=False)
            else:
                reference = image_tool.ensure_base("podman", image.source, podman.env)
                if not reference.startswith(image_tool.STAND_IN_PREFIX):
                    raise ClusterError(f"{image.source} was pulled, not made as a stand-in: "
                                       f"it would be named {image.name} on the node")  # fmt: skip
                podman("tag", reference, image.name)
            save(podman, image)


def save(podman: Any, image: ChartImage) -> None:
    save_archive(podman, image.name, image.archive)
    # One archive per image: an older build of it is never used again.
    for stale in image.archive.parent.glob(image.archive.name.rsplit("-", 1)[0] + "-*.tar"):
        if stale != image.archive:
            stale.unlink()


def load_chart_images(
    plane: ControlPlane, timings: dict[str, float] | None = None, extra: tuple[ChartImage, ...] = ()
) -> dict[str, Any]:
    """Imports the chart's images (and `extra` ones) into the node; returns the values that use
    them. `timings` gets the seconds spent finding or building the archives, and importing them."""
    started = time.monotonic()
    images = [*chart_images(), *extra]
    found = archives(images)
    built = time.monotonic()
    # Side by side: each import is mostly containerd unpacking layers, on another core.
    with ThreadPoolExecutor(max_workers=len(found)) as pool:
        list(pool.map(lambda archive: import_image(plane, archive), found))
    if timings is not None:
        timings["chart images: archives"] = built - started
        timings["chart images: import"] = time.monotonic() - built
    return values(images)


def values(images: list[ChartImage]) -> dict[str, Any]:
    by_role = {image.role: image.name for image in images}
    repository, tag = by_role["app"].rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag},
        "pgbouncer": {"image": by_role["pgbouncer"]},
        "localBackingServices": {
            "redisImage": by_role["redis"],
            "postgresImage": by_role["postgres"],
        },
    }


def load(plane: ControlPlane, image: str, name: str | None = None) -> str:
    """`kind load` for the real node: saves `image` from the engine `make image` uses (Docker
    if one answers, else podman's default store) and imports it as `name` (by default
    kind.local/<its last path component>); returns that name."""
    name = name or node_name(image, stand_in=False)
    engine = image_tool.engine_name()
    env = image_tool.podman_env() if engine == "podman" else None
    with tempfile.TemporaryDirectory(prefix="userapi-load-") as tmp:
        archive = Path(tmp) / "image.tar"
        tag = [engine, "tag", image, name]
        save = [engine, "save", "-o", str(archive), name]
        if engine == "podman":
            save[2:2] = ["--format", "docker-archive"]
        for command in (tag, save):
            result = subprocess.run(command, env=env, capture_output=True, text=True,
                                    check=False, timeout=600)  # fmt: skip
            if result.returncode != 0:
                raise ClusterError(f"{' '.join(command)}: {result.stderr.strip()}")
        import_image(plane, archive)
    return name
