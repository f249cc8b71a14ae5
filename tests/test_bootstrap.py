"""scripts/bootstrap: a machine that lacks a tool is told the exact command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH holding every command of this one except `missing` (links in one directory)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bindir / entry.name
            if entry.name in missing or target.exists() or not os.access(entry.path, os.X_OK):
                continue
            target.symlink_to(entry.path)
    return str(bindir)


def bootstrap(*args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOOTSTRAP), *args],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_missing_server_is_named_with_its_install_command(tmp_path: Path) -> None:
    assert shutil.which("redis-server"), "`make test` installs redis-server before the tests"
    result = bootstrap("--check", "test", path=path_without(tmp_path, "redis-server"))
    assert result.returncode == 1, result.stderr
    assert "make test needs" in result.stderr
    assert "apt-get install -y --no-install-recommends redis-server" in result.stderr
    # Only what is missing: PostgreSQL, PgBouncer, npm and wrk are there.
    assert "postgresql" not in result.stderr
    assert "wrk" not in result.stderr


def test_everything_present_is_silent_and_succeeds(tmp_path: Path) -> None:
    for target in ("dev", "test", "bench"):
        result = bootstrap(target, path=os.environ["PATH"])
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), target


def test_a_python_older_than_3_11_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\ncase "$2" in *platform*) echo 3.9.2; exit 0 ;; esac\nexit 1\n')
    old.chmod(0o755)
    result = bootstrap("--check", "dev", path=os.environ["PATH"], PYTHON=str(old))
    assert result.returncode == 1
    assert f"{old} is 3.9.2 and userapi needs Python 3.11 or later" in result.stderr
    assert "apt-get" not in result.stderr  # apt cannot fix it: no misleading command


def test_an_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    result = bootstrap("deploy", path=os.environ["PATH"])
    assert result.returncode == 2
    assert "usage: scripts/bootstrap" in result.stderr


def test_a_missing_promtool_asks_for_debians_prometheus(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "`make test` installs prometheus before the tests"
    result = bootstrap("--check", "test", path=path_without(tmp_path, "promtool"))
    assert result.returncode == 1, result.stderr
    assert "apt-get install -y --no-install-recommends prometheus" in result.stderr
