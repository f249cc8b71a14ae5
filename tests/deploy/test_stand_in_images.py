"""Stand-in base images (harness/images.py, made from Debian packages when no registry answers)
are kept under names of their own, never the official image's, and nothing built on one is
pushed. Before, a stand-in was imported as docker.io/library/python:… itself, so a push of that
name, or of an image built on it, would have published Debian packages as the official image."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from harness import images as image_tool
from harness.podman import Podman


def test_a_stand_in_never_has_an_official_name() -> None:
    for name in (image_tool.python_base(), image_tool.pgbouncer_image(), "debian:bookworm"):
        local = image_tool.stand_in_name(name)
        assert local.startswith("localhost/userapi-standin/")
        assert local != image_tool.qualified(name)
        assert image_tool.qualified(local) == local  # no registry lookup resolves it elsewhere


def _tiny_rootfs(directory: Path) -> Path:
    tarball = directory / "rootfs.tar"
    with tarfile.open(tarball, "w") as archive:
        data = b"stand-in\n"
        info = tarfile.TarInfo("etc/stand-in")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return tarball


def _import(engine: Podman, tarball: Path, name: str, *, stand_in: bool) -> None:
    label = ["--change", f"LABEL {image_tool.STAND_IN_LABEL}=debian-test"] if stand_in else []
    engine("import", "-q", *label, str(tarball), name)


def test_a_stand_in_left_under_the_official_name_is_untagged_and_its_own_name_used(
    podman_engine: Podman, tmp_path: Path
) -> None:
    name = "debian:stand-in-test"
    official, local = image_tool.qualified(name), image_tool.stand_in_name(name)
    tarball = _tiny_rootfs(tmp_path)
    _import(podman_engine, tarball, official, stand_in=True)  # what the old script did
    _import(podman_engine, tarball, local, stand_in=True)
    try:
        assert image_tool.ensure_base("podman", name, podman_engine.env) == local
        assert podman_engine("image", "exists", official, check=False).returncode != 0
    finally:
        podman_engine("rmi", "-f", official, local, check=False)


def test_the_real_image_keeps_its_official_name(podman_engine: Podman, tmp_path: Path) -> None:
    name = "debian:real-test"
    official = image_tool.qualified(name)
    _import(podman_engine, _tiny_rootfs(tmp_path), official, stand_in=False)
    try:
        assert image_tool.ensure_base("podman", name, podman_engine.env) == official
    finally:
        podman_engine("rmi", "-f", official, check=False)


def test_a_push_of_a_stand_in_or_of_an_image_built_on_one_is_refused(
    podman_engine: Podman, tmp_path: Path
) -> None:
    local = image_tool.stand_in_name("debian:push-test")
    _import(podman_engine, _tiny_rootfs(tmp_path), local, stand_in=True)
    built_on_it = "127.0.0.1:9/userapi/app:built-on-stand-in"
    # Retagged under a registry's name, or built on it: the label travels with the image.
    renamed = "127.0.0.1:9/library/debian:bookworm"
    (tmp_path / "Containerfile").write_text(f"FROM {local}\nLABEL org.example.app=1\n")
    podman_engine("build", "--pull=never", "-t", built_on_it, str(tmp_path), timeout=300)
    podman_engine("tag", local, renamed)
    try:
        for tag in (local, renamed, built_on_it):
            with pytest.raises(SystemExit, match="not pushing"):
                image_tool.push("podman", tag, podman_engine.env)
        # An image not built on a stand-in is pushed (here to a closed port: the push itself
        # is tried and fails, not refused).
        clean = "127.0.0.1:9/userapi/app:clean"
        _import(podman_engine, _tiny_rootfs(tmp_path), clean, stand_in=False)
        with pytest.raises(SystemExit, match=r"`podman push .*:clean` failed"):
            image_tool.push("podman", clean, podman_engine.env)
    finally:
        podman_engine("rmi", "-f", local, renamed, built_on_it, check=False)
        podman_engine("rmi", "-f", "127.0.0.1:9/userapi/app:clean", check=False)
