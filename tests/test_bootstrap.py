"""scripts/bootstrap: a machine that lacks a tool is told the exact command that installs it."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"
GO_TOOLCHAIN = ROOT / "controlplane" / "go_toolchain.py"
VERSIONS = (ROOT / "controlplane" / "VERSIONS").read_text()
GO = re.search(r"^GO=(\S+)$", VERSIONS, re.MULTILINE)[1]  # type: ignore[index]
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]


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


def run(
    command: list[str], *, path: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The machine's proxy settings pass through: the fetch goes where `go` itself would go.
    inherited = {name: os.environ[name] for name in ("HOME", "GOPROXY") if name in os.environ}
    return subprocess.run(
        command,
        env={"PATH": path, **inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bootstrap(*args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([str(BOOTSTRAP), *args], path=path, env=env)


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


def test_a_machine_without_go_gets_the_pinned_toolchain_from_the_module_proxy(
    tmp_path: Path,
) -> None:
    path = path_without(tmp_path, "go", "gofmt")
    assert shutil.which("go", path=path) is None
    cache = tmp_path / "cache"
    # `make test`'s first step, with everything else there: it fetches Go as this user, no root.
    result = run(
        [str(BOOTSTRAP), "test"], path=path, timeout=600, env={"USERAPI_CACHE": str(cache)}
    )
    assert result.returncode == 0, result.stderr
    assert f"fetching {GO} (golang.org/toolchain@v0.0.1-{GO}.linux-{GOARCH})" in result.stderr
    goroot = cache / "go" / "toolchain" / f"{GO}.linux-{GOARCH}"
    version = run([str(goroot / "bin" / "go"), "version"], path=path, env={"GOTOOLCHAIN": "local"})
    assert version.stdout == f"go version {GO} linux/{GOARCH}\n", version.stderr
    assert sorted(p.name for p in goroot.parent.iterdir()) == [goroot.name]  # no leftovers
    # Now there: silent, and --check agrees.
    again = bootstrap("--check", "test", path=path, USERAPI_CACHE=str(cache))
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_check_names_the_missing_toolchain_without_asking_for_root(tmp_path: Path) -> None:
    result = bootstrap("--check", "test", path=os.environ["PATH"], USERAPI_CACHE=str(tmp_path))
    assert result.returncode == 1
    assert f"the Go toolchain pinned in controlplane/VERSIONS ({GO})" in result.stderr
    assert "scripts/bootstrap test fetches it (no root needed)" in result.stderr
    assert "apt-get" not in result.stderr
    assert not (tmp_path / "go").exists()


def fake_proxy(tmp_path: Path, content: bytes) -> str:
    """A file:// GOPROXY serving `content` as the pinned toolchain's zip."""
    version = f"v0.0.1-{GO}.linux-{GOARCH}"
    at = tmp_path / "proxy" / "golang.org" / "toolchain" / "@v"
    at.mkdir(parents=True)
    (at / f"{version}.zip").write_bytes(content)
    return f"file://{tmp_path / 'proxy'}"


def tampered_toolchain(tmp_path: Path) -> bytes:
    """A well-formed toolchain zip whose go is not Go's: right names, wrong content."""
    prefix = f"golang.org/toolchain@v0.0.1-{GO}.linux-{GOARCH}/"
    archive = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr(prefix + "bin/go", f"#!/bin/sh\necho go version {GO} linux/{GOARCH}\n")
        out.writestr(prefix + "VERSION", f"{GO}\n")
    return archive.read_bytes()


def test_a_tampered_toolchain_zip_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proxy = fake_proxy(tmp_path, tampered_toolchain(tmp_path))
    result = run(
        ["python3", str(GO_TOOLCHAIN)],
        path=os.environ["PATH"],
        env={"GOPROXY": proxy, "USERAPI_CACHE": str(cache)},
    )
    assert result.returncode == 1
    assert "does not match the hash pinned in controlplane/VERSIONS" in result.stderr
    assert "refused, nothing installed" in result.stderr
    assert result.stdout == ""
    assert list((cache / "go" / "toolchain").iterdir()) == []  # not even the download


def test_a_download_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proxy = fake_proxy(tmp_path, b"<html>captive portal</html>")
    result = run(
        ["python3", str(GO_TOOLCHAIN)],
        path=os.environ["PATH"],
        # The first proxy has nothing: the next one is tried.
        env={"GOPROXY": f"file:///nowhere,{proxy}", "USERAPI_CACHE": str(cache)},
    )
    assert result.returncode == 1
    assert "is not a zip" in result.stderr
    assert list((cache / "go" / "toolchain").iterdir()) == []


def test_controlplane_build_ignores_the_machines_go(tmp_path: Path) -> None:
    # A `go` first on PATH that fails: the build must not run it (nor the one in /usr/local/go).
    bindir = tmp_path / "wrong"
    bindir.mkdir()
    (bindir / "go").write_text("#!/bin/sh\necho 'the machine go ran' >&2\nexit 3\n")
    (bindir / "go").chmod(0o755)
    result = run(
        [str(ROOT / "controlplane" / "build")],
        path=f"{bindir}{os.pathsep}{os.environ['PATH']}",
        timeout=3600,  # a no-op when `make controlplane` has built it; a full build otherwise
    )
    assert result.returncode == 0, result.stderr
    assert "the machine go ran" not in result.stderr
    assert (Path(result.stdout.strip().splitlines()[-1]) / "bin" / "kube-apiserver").is_file()
