#!/usr/bin/env python3
"""The Go toolchain that builds the control plane: the one pinned in controlplane/VERSIONS, never
the machine's own `go`, so that every machine compiles the same binaries with the same compiler.

    controlplane/go_toolchain.py           print its GOROOT, fetching it first when missing
    controlplane/go_toolchain.py --check   print its GOROOT, or exit 1 when it is missing
    controlplane/go_toolchain.py --sum go1.X.Y
                                           print the GO_SUM_* lines for VERSIONS, as the
                                           checksum database has them

It comes the way Go's own toolchain switching gets it: the module `golang.org/toolchain` at
`v0.0.1-go1.X.Y.linux-ARCH` from the Go module proxy ($GOPROXY, default proxy.golang.org; a
file:// proxy works too), a zip whose files sit under `golang.org/toolchain@VERSION/`. The zip is
checked against the module hash pinned in VERSIONS (GO_SUM_<arch>, the `h1:` hash that go.sum files
and sum.golang.org carry) before anything is unpacked, and a mismatch is refused. A pinned hash
rather than a lookup at fetch time: a lookup that cannot check the checksum database's signed
tree proves nothing against a bad proxy (the proxy serves the lookup too, here), whereas the pin
was taken once from sum.golang.org by the pinned `go` itself (`--sum`, which verifies the signed
tree) and is reviewed in the commit like any go.sum line.

Unpacked under $USERAPI_CACHE (default ~/.cache/userapi) in go/toolchain/, beside the Go module
and build caches controlplane/build keeps there. Standard library only: scripts/bootstrap runs it
before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
VERSIONS = HERE / "VERSIONS"
MODULE = "golang.org/toolchain"
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ToolchainError(RuntimeError):
    """The pinned toolchain could not be fetched, or what came is not what was pinned."""


def log(message: str) -> None:
    print(f"go toolchain: {message}", file=sys.stderr, flush=True)


def pins(path: Path = VERSIONS) -> dict[str, str]:
    """VERSIONS' `NAME=value` lines (it is a shell file; only plain assignments are read)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier() and not line.startswith("#"):
            found[name] = value.strip()
    return found


def arch() -> str:
    machine = platform.machine()
    if sys.platform != "linux" or machine not in ARCHES:
        raise ToolchainError(f"no Go toolchain is pinned for {sys.platform}/{machine}")
    return ARCHES[machine]


def module_version(go: str, goarch: str) -> str:
    return f"v0.0.1-{go}.linux-{goarch}"


def cache_root() -> Path:
    base = os.environ.get("USERAPI_CACHE") or str(Path.home() / ".cache" / "userapi")
    return Path(base) / "go" / "toolchain"


def proxies() -> list[str]:
    """$GOPROXY's proxies in order; `direct` (a VCS checkout) does not serve toolchains, `off`
    ends the list."""
    configured = os.environ.get("GOPROXY") or "https://proxy.golang.org,direct"
    found = []
    for entry in configured.replace("|", ",").split(","):
        entry = entry.strip()
        if entry == "off":
            break
        if entry and entry != "direct":
            found.append(entry.rstrip("/"))
    if not found:
        raise ToolchainError(f"GOPROXY={configured!r} names no proxy to fetch Go from")
    return found


def module_hash(archive: zipfile.ZipFile) -> str:
    """The `h1:` hash of a module zip, as golang.org/x/mod/sumdb/dirhash.Hash1 computes it: the
    SHA-256 of the sorted lines `<sha256 hex>  <file name>` of every file."""
    names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
    summary = hashlib.sha256()
    for name in names:
        if "\n" in name:
            raise ToolchainError(f"a file name with a newline in the zip: {name!r}")
        digest = hashlib.sha256()
        with archive.open(name) as member:
            for chunk in iter(lambda: member.read(1 << 20), b""):
                digest.update(chunk)
        summary.update(f"{digest.hexdigest()}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def download(version: str, target: Path) -> str:
    """Fetch the module zip into `target` from the first proxy that has it; the proxy's URL."""
    failures = []
    for proxy in proxies():
        url = f"{proxy}/{MODULE}/@v/{version}.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:  # noqa: S310 - GOPROXY's http(s) or file URL, by design
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as error:
            failures.append(f"{url}: {error}")
            continue
        return url
    raise ToolchainError("no proxy served the toolchain:\n  " + "\n  ".join(failures))


def executable(relative: PurePosixPath, goarch: str) -> bool:
    """Go's own rule (cmd/go/internal/toolchain) for the files a toolchain zip must run: the
    zip's mode bits are not covered by the module hash, so they are not trusted."""
    parts = relative.parts
    return (
        (len(parts) == 2 and parts[0] == "bin")
        or (len(parts) == 4 and parts[:3] == ("pkg", "tool", f"linux_{goarch}"))
        or (len(parts) == 3 and parts[:2] == ("lib", "wasm") and parts[2].endswith("_exec"))
    )


def unpack(archive: zipfile.ZipFile, prefix: str, into: Path, goarch: str) -> None:
    for info in archive.infolist():
        if info.is_dir():
            continue
        if not info.filename.startswith(prefix):
            raise ToolchainError(f"a file outside {prefix} in the zip: {info.filename!r}")
        relative = PurePosixPath(info.filename[len(prefix) :])
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ToolchainError(f"an unsafe file name in the zip: {info.filename!r}")
        destination = into.joinpath(*relative.parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as member, destination.open("wb") as out:
            shutil.copyfileobj(member, out, 1 << 20)
        destination.chmod(0o755 if executable(relative, goarch) else 0o644)


def fetch(go: str, expected: str, goarch: str, goroot: Path) -> None:
    version = module_version(go, goarch)
    goroot.parent.mkdir(parents=True, exist_ok=True)
    # Everything happens in a sibling directory that is renamed into place at the end, so an
    # interrupted fetch leaves no half toolchain behind that a later run would take for whole.
    with tempfile.TemporaryDirectory(prefix=f".{goroot.name}.", dir=goroot.parent) as work:
        archive_path = Path(work) / f"{version}.zip"
        log(f"fetching {go} ({MODULE}@{version}) from the Go module proxy")
        url = download(version, archive_path)
        size = archive_path.stat().st_size
        try:
            archive = zipfile.ZipFile(archive_path)
        except zipfile.BadZipFile as error:
            raise ToolchainError(f"{url} is not a zip ({size} bytes): {error}") from error
        with archive:
            actual = module_hash(archive)
            if actual != expected:
                raise ToolchainError(
                    f"{url} does not match the hash pinned in controlplane/VERSIONS: "
                    f"got {actual}, pinned {expected}; refused, nothing installed"
                )
            unpacked = Path(work) / "goroot"
            unpack(archive, f"{MODULE}@{version}/", unpacked, goarch)
        if not (unpacked / "bin" / "go").is_file():
            raise ToolchainError(f"{url} has no bin/go")
        unpacked.rename(goroot)
        log(f"{go} in {goroot} ({size / 1e6:.0f} MB fetched from {url})")


def pinned_goroot(*, fetch_missing: bool) -> Path:
    pinned = pins()
    go, goarch = pinned["GO"], arch()
    expected = pinned.get(f"GO_SUM_{goarch}")
    if not expected:
        raise ToolchainError(
            f"controlplane/VERSIONS pins no hash for Go {go} on linux-{goarch}: add "
            f"GO_SUM_{goarch} (controlplane/go_toolchain.py --sum {go} prints it)"
        )
    goroot = cache_root() / f"{go}.linux-{goarch}"
    if not (goroot / "bin" / "go").is_file():
        if not fetch_missing:
            raise ToolchainError(f"Go {go} is not in {goroot.parent} yet")
        fetch(go, expected, goarch, goroot)
    return goroot


def checksum_lines(go: str) -> list[str]:
    """GO_SUM_* lines for `go`, from sum.golang.org through the pinned go's own client, which
    checks the database's signed tree (a new pin is vouched for by the one before it)."""
    binary = pinned_goroot(fetch_missing=True) / "bin" / "go"
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GOMODCACHE": scratch, "GOFLAGS": "-modcacherw"}
        env.update(GOTOOLCHAIN="local", GOROOT=str(binary.parents[1]))
        for goarch in sorted(set(ARCHES.values())):
            result = subprocess.run(  # noqa: S603 - the pinned go, on a fixed module path
                [str(binary), "mod", "download", "-json", f"{MODULE}@{module_version(go, goarch)}"],
                env=env,
                cwd=scratch,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ToolchainError(f"go mod download failed: {result.stdout}{result.stderr}")
            lines.append(f"GO_SUM_{goarch}={json.loads(result.stdout)['Sum']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="never fetch: exit 1 when missing")
    parser.add_argument("--sum", metavar="GOVERSION", help="print VERSIONS' GO_SUM_* lines for it")
    args = parser.parse_args(argv)
    try:
        if args.sum:
            print("\n".join(checksum_lines(args.sum)))
        else:
            print(pinned_goroot(fetch_missing=not args.check))
    except ToolchainError as error:
        log(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
