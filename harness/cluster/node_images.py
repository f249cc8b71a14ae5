"""The node's images, without a registry: each a FROM-scratch image around one static binary,
built with the harness's private podman (COPY steps only, no network), saved as an archive and
imported into the node's containerd. Their names are *.local ones, which Knative never resolves
against a registry; pods find them already present and never pull.

The archives are cached under the user's cache directory, keyed by what went into them, so a
second cluster imports them without running podman at all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cluster.plane import QUEUE_IMAGE, ControlPlane

PAUSE_IMAGE = "dev.local/userapi/pause:node"
ACTIVATOR_IMAGE = "dev.local/knative-serving/activator:{version}"
AUTOSCALER_IMAGE = "dev.local/knative-serving/autoscaler:{version}"
# busybox's httpd: the smallest web server a Knative Service can run (tests/cluster).
HELLO_IMAGE = "dev.local/userapi/hello:busybox"
# A CGI script of the hello image: answers with the Revision that served it (Knative sets
# K_REVISION in every user container) after sleeping `?SECONDS`, so that tests can tell
# revisions apart and hold requests long enough to need more than one pod.
REVISION_CGI = """#!/bin/busybox sh
case "$QUERY_STRING" in *[!0-9.]*) ;; ?*) /bin/busybox sleep "$QUERY_STRING" ;; esac
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$K_REVISION"
"""
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (scripts/bootstrap installs it)
RECIPE = "1"  # bump to rebuild every cached archive


@dataclass(frozen=True)
class Image:
    name: str
    binary: Path
    path: str  # where the binary lands in the image
    user: str
    # (path in the image, content); executable, as a CGI script must be, and harmless for data.
    files: tuple[tuple[str, str], ...] = ()

    def containerfile(self) -> str:
        lines = ["FROM scratch", f"COPY {self.binary.name} {self.path}"]
        lines += [f"COPY files/{i} {path}" for i, (path, _) in enumerate(self.files)]
        lines += [f"USER {self.user}", f'ENTRYPOINT ["{self.path}"]']
        return "\n".join(lines) + "\n"

    def key(self) -> str:
        digest = hashlib.sha256(f"{RECIPE}\n{self.name}\n{self.containerfile()}".encode())
        for _, content in self.files:
            digest.update(content.encode())
        with self.binary.open("rb") as binary:
            for chunk in iter(lambda: binary.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()[:16]


def node_images(plane: ControlPlane) -> list[Image]:
    version = plane.knative_version
    return [
        Image(PAUSE_IMAGE, plane.binary("pause"), "/pause", "65535:65535"),
        # Laid out as ko lays out Knative's release images, non-root as their manifests require.
        Image(ACTIVATOR_IMAGE.format(version=version), plane.binary("activator"),
              "/ko-app/activator", "65532:65532"),
        Image(AUTOSCALER_IMAGE.format(version=version), plane.binary("autoscaler"),
              "/ko-app/autoscaler", "65532:65532"),
        Image(QUEUE_IMAGE.format(version=version), plane.binary("queue"),
              "/ko-app/queue", "65532:65532"),
        Image(HELLO_IMAGE, BUSYBOX, "/bin/busybox", "65532:65532",
              files=(("/www/index.html", "hello from the real node\n"),
                     ("/www/cgi-bin/revision", REVISION_CGI))),
    ]  # fmt: skip


def cache_dir() -> Path:
    base = os.environ.get("USERAPI_CACHE") or str(Path.home() / ".cache" / "userapi")
    return Path(base) / "node-images"


def archives(plane: ControlPlane) -> list[Path]:
    """An image archive for each node image, built when not cached."""
    found, missing = [], []
    for image in node_images(plane):
        stem = image.name.replace("/", "_").replace(":", "_")
        archive = cache_dir() / f"{stem}-{image.key()}.tar"
        found.append(archive)
        if not archive.exists():
            missing.append((image, archive))
    if missing:
        build(missing)
    return found


def build(images: list[tuple[Image, Path]]) -> None:
    from harness.podman import Podman  # imports the image tooling only when building

    with Podman() as podman:
        for image, archive in images:
            context = podman.root / "contexts" / image.key()
            (context / "files").mkdir(parents=True, exist_ok=True)
            shutil.copy2(image.binary, context / image.binary.name)
            for i, (_, content) in enumerate(image.files):
                (context / "files" / str(i)).write_text(content)
                (context / "files" / str(i)).chmod(0o755)
            (context / "Containerfile").write_text(image.containerfile())
            podman("build", "--network", "none", "--tag", image.name, str(context), timeout=300)
            save_archive(podman, image.name, archive)


def save_archive(podman: Any, name: str, archive: Path) -> None:
    """`podman save` of `name` into `archive`, which appears only once complete: an
    interrupted save never passes for a cached image."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    podman("save", "--format", "docker-archive", "-o", str(partial), name, timeout=600)
    partial.rename(archive)
