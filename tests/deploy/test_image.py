"""The container image's recipe, checked statically: there is no Docker engine on CI machines."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!;\[ ]", requirement, maxsplit=1)[0].lower()
        assert name in locked, f"{name} is not in requirements.lock: regenerate it"
    blocks = (ROOT / "requirements.lock").read_text().split("\n\n")
    for name in locked:
        assert re.search(
            rf"^{re.escape(name)}==\S+ \\\n\s+--hash=sha256:", "\n".join(blocks), re.M | re.I
        ), name


def test_the_lock_satisfies_every_runtime_requirement() -> None:
    # A floor raised for a CVE (pyjwt>=2.10.1, CVE-2024-53861) must hold in what is installed.
    from packaging.requirements import Requirement

    locked = _locked()
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        version = locked[requirement.name.lower()]
        assert requirement.specifier.contains(version, prereleases=True), (line, version)


def test_the_image_carries_no_test_tools() -> None:
    assert {"pytest", "ruff", "mypy", "helm-python-sdk"} & set(_locked()) == set()


def test_the_dockerfile_is_multi_stage_non_root_and_exec_form() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root uid:gid"
    assert '\nENTRYPOINT ["userapi", "serve"]\n' in dockerfile
    assert "--require-hashes" in dockerfile
    assert "compileall" in dockerfile
    # `docker build .` builds the last stage: it must be what the chart runs, not skaffold's.
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.M)
    assert stages[-1] == ("base", "runtime")
    base = dockerfile[dockerfile.index("AS base\n") : dockerfile.index("AS dev\n")]
    assert '\nENTRYPOINT ["userapi", "serve"]\n' in base


def test_the_build_context_excludes_everything_but_the_sources() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1:2] == ["*"] or "*" in ignore
    assert "!services/" in ignore
    assert "!tests/" not in ignore
