#!/usr/bin/env python3
"""`make image`: builds the userapi image from the Dockerfile and reports its size.

Docker builds it when a Docker engine answers; otherwise podman (buildah inside) does. The base
images the Dockerfile and the chart name are pulled when a registry can be reached. When it cannot
(an offline machine, CI here), stand-ins are made from Debian packages with mmdebstrap, from the
machine's own apt sources, and the build says so loudly: an image built on a stand-in is for
tests, never for a registry. A stand-in is kept under a name of its own
(`localhost/userapi-standin/...`, never the official image's), and `--push` refuses any image
built on one.

Standard library only: it runs before any virtualenv exists. The test harness (harness/podman.py)
imports it for the same build and the same engine settings.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TAG = "localhost/userapi:dev"
# Where stand-in bases are kept between runs (CI on the same machine reuses them).
CACHE_ENV = "USERAPI_IMAGE_CACHE"
# A stand-in is remade when its recipe changes; this names the recipe.
STAND_IN_RECIPE = "1"
# Stand-ins live under this prefix, so that none can pass for (or be pushed as) the official
# image it replaces; their label, which every image built on them inherits, marks them too.
STAND_IN_PREFIX = "localhost/userapi-standin/"
STAND_IN_LABEL = "org.userapi.stand-in"


def log(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "userapi" / "images"


# --- the engine --------------------------------------------------------------------------------


def docker_answers() -> bool:
    """A Docker engine, not just its client (the client alone is common on CI images)."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and bool(probe.stdout.strip())


def engine_name() -> str:
    if docker_answers():
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise SystemExit("image: no Docker engine answers and podman is not installed")


def containers_conf_text() -> str:
    """podman settings that work on the machines this project runs on (containers.md):
    runc with cgroupfs (crun refuses a hybrid cgroup host), ulimits within what root may set
    here (no CAP_SYS_RESOURCE: podman's defaults make runc's setrlimit fail), and a file event
    log (no journald in a container or a CI VM)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = hard if hard != resource.RLIM_INFINITY else 1048576
    _, procs_hard = resource.getrlimit(resource.RLIMIT_NPROC)
    nproc = min(32768, procs_hard if procs_hard != resource.RLIM_INFINITY else 32768)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


def podman_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment podman runs in: the caller's CONTAINERS_CONF when set (the test harness
    sets a private one), else this machine's settings written to the cache directory."""
    env = dict(os.environ if base is None else base)
    if not env.get("CONTAINERS_CONF"):
        path = cache_dir() / "containers.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(containers_conf_text())
        env["CONTAINERS_CONF"] = str(path)
    if not env.get("CONTAINERS_REGISTRIES_CONF"):
        path = cache_dir() / "registries.conf"
        path.write_text(REGISTRIES_CONF)
        env["CONTAINERS_REGISTRIES_CONF"] = str(path)
    return env


# Short names (FROM python:3.11…) mean Docker Hub, as they do for Docker. Debian's podman
# defines no search registry and would refuse them.
REGISTRIES_CONF = 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'


def run(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 1800,
    check: bool = True,
    quiet: bool = False,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        env=None if env is None else dict(env),
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        capture_output=quiet,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        detail = f"\n{result.stderr}" if quiet and result.stderr else ""
        raise SystemExit(f"image: `{' '.join(args)}` failed ({result.returncode}){detail}")
    return result


# --- base images and their stand-ins -----------------------------------------------------------


def qualified(name: str) -> str:
    """docker.io/library/python:tag for python:tag, as Docker and podman both resolve it."""
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def stand_in_name(name: str) -> str:
    """The name the stand-in for base image `name` is kept under."""
    return STAND_IN_PREFIX + qualified(name)


@dataclass(frozen=True)
class StandIn:
    """What stands in for an image: Debian packages of one suite, the image settings (ENV,
    CMD...) of the image it replaces, and for a service's image (PostgreSQL, Redis) the files
    (an entrypoint) and shell steps that make it behave as that image does."""

    name: str
    suite: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()  # (path in the image, content), mode 0755
    steps: tuple[str, ...] = ()  # run with the root filesystem's path as $1, after `files`

    def key(self, sources: str) -> str:
        recipe: list[object] = [STAND_IN_RECIPE, self.suite, self.packages, self.changes, sources]
        if self.files or self.steps:  # (the keys of stand-ins without them stay as they were)
            recipe += [self.files, self.steps]
        return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]

    def hooks(self) -> list[str]:
        """mmdebstrap --customize-hook commands writing `files` and running `steps`."""
        hooks = []
        for path, content in self.files:
            encoded = base64.b64encode(content.encode()).decode()
            hooks.append(f'mkdir -p "$1{Path(path).parent}" && echo {encoded} | base64 -d '
                         f'> "$1{path}" && chmod 0755 "$1{path}"')  # fmt: skip
        return hooks + list(self.steps)


def python_base() -> str:
    dockerfile = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    if not found:
        raise SystemExit("image: the Dockerfile has no ARG PYTHON_IMAGE")
    return found[1]


def pgbouncer_image() -> str:
    values = (ROOT / "helm" / "userapi" / "values.yaml").read_text()
    found = re.search(r"^pgbouncer:\n(?:  .*\n)*?  image: (\S+)", values, re.M)
    if not found:
        raise SystemExit("image: helm/userapi/values.yaml names no pgbouncer.image")
    return found[1]


def local_backing_images() -> tuple[str, str]:
    """The chart's in-cluster Redis and PostgreSQL images (localBackingServices)."""
    values = (ROOT / "helm" / "userapi" / "values.yaml").read_text()
    keys = ("redisImage", "postgresImage")
    found = [re.search(rf"^  {key}: (\S+)", values, re.M) for key in keys]
    if not (found[0] and found[1]):
        raise SystemExit("image: helm/userapi/values.yaml names no localBackingServices images")
    return found[0][1], found[1][1]


# The official redis image's entrypoint, for what the chart uses of it: arguments that are
# options (or a .conf file) are redis-server's. Its redis-server is built with protected mode
# off (with no password, Debian's refuses every client that is not on loopback); options given
# after it still win.
REDIS_ENTRYPOINT = """#!/bin/sh
# Stand-in for the official redis image's docker-entrypoint.sh (harness/images.py).
set -eu
case "${1:-}" in
  ""|-*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
"""

# Debian bookworm's PostgreSQL (15; the official image of the chart's value is 16).
POSTGRES_MAJOR = "15"
# The official postgres image's entrypoint, for what the chart uses of it: a first start
# initialises PGDATA with POSTGRES_USER as the superuser (password POSTGRES_PASSWORD,
# scram-sha-256 over TCP, trust on the local socket, which pg_isready uses), creates
# POSTGRES_DB, then runs the server on every address. It runs as the uid it is given (the
# chart's 70, the image's postgres user) and writes only to PGDATA, the socket directory and
# /tmp: a read-only root filesystem is enough.
POSTGRES_ENTRYPOINT = """#!/bin/sh
# Stand-in for the official postgres image's docker-entrypoint.sh (harness/images.py).
set -eu
case "${1:-}" in
  ""|-*) set -- postgres "$@" ;;
esac
if [ "$1" != postgres ]; then
  exec "$@"
fi
shift
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres stand-in: POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  umask 077
  password_file="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
  initdb --username="$POSTGRES_USER" --pwfile="$password_file" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    database="$(printf %s "$POSTGRES_DB" | sed 's/"/""/g')"
    echo "CREATE DATABASE \"$database\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "postgres stand-in: initialised $PGDATA (database $POSTGRES_DB)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"""


def stand_ins() -> dict[str, StandIn]:
    """The images this project runs, keyed by the name the Dockerfile or the chart uses."""
    python = python_base()
    suite = python.rsplit("-", 1)[-1]  # python:3.11.14-slim-bookworm: Debian bookworm
    pgbouncer = pgbouncer_image()
    redis, postgres = local_backing_images()
    path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {
        python: StandIn(
            name=python,
            suite=suite,
            # Debian's python3.11 is 3.11.2 at /usr/bin: the Dockerfile uses `python3`, which
            # both images have. python3.11-venv brings ensurepip, which the build stage needs.
            packages=("ca-certificates", "netbase", "tzdata", "python3.11", "python3.11-venv"),
            changes=(
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
            ),
        ),
        pgbouncer: StandIn(
            name=pgbouncer,
            # The chart's PgBouncer is 1.24.1: Debian packages that version in trixie (bookworm
            # has 1.18, whose SIGTERM is an immediate shutdown instead of a drain).
            suite="trixie",
            packages=("pgbouncer", "ca-certificates"),
            changes=(
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                # The edoburu image's user; the chart sets runAsUser/runAsGroup anyway.
                "USER 70:70",
                'CMD ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]',
            ),
        ),
        # The local profile's in-cluster Redis and PostgreSQL (localBackingServices), with the
        # official alpine images' uids (the chart's runAsUser): redis 999:1000, postgres 70:70.
        redis: StandIn(
            name=redis,
            suite="bookworm",
            packages=("redis-server",),
            changes=(
                path,
                "WORKDIR /data",
                "USER 999:1000",
                'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
                'CMD ["redis-server"]',
            ),
            files=(("/usr/local/bin/docker-entrypoint.sh", REDIS_ENTRYPOINT),),
            steps=(
                'chroot "$1" groupmod -g 1000 redis && chroot "$1" usermod -u 999 redis',
                'mkdir -p "$1/data"',
            ),
        ),
        postgres: StandIn(
            name=postgres,
            suite="bookworm",
            packages=(f"postgresql-{POSTGRES_MAJOR}",),
            changes=(
                f"ENV PATH=/usr/lib/postgresql/{POSTGRES_MAJOR}/bin:/usr/local/sbin:"
                "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV PGDATA=/var/lib/postgresql/data",
                "ENV LANG=C.UTF-8",
                "USER 70:70",
                'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
                'CMD ["postgres"]',
            ),
            files=(("/usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT),),
            steps=(
                # initdb needs a passwd entry for the uid it runs as.
                'chroot "$1" groupmod -g 70 postgres && chroot "$1" usermod -u 70 postgres',
                # The cluster the package's postinst made: PGDATA is the image's own.
                f'rm -rf "$1/var/lib/postgresql/{POSTGRES_MAJOR}" '
                f'"$1/etc/postgresql/{POSTGRES_MAJOR}"',
            ),
        ),
    }


@functools.cache  # apt-get indextargets takes seconds; one answer per process is enough
def machine_apt_sources(suite: str) -> str:
    """This machine's Debian apt sources, moved to `suite`, one-line format for mmdebstrap.

    Only the entries of the machine's own Debian release are taken (its codename, -updates,
    -security); third-party repositories on the machine stay out of the image."""
    release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    codename = release.get("VERSION_CODENAME", "").strip('"')
    if not codename:
        raise SystemExit("image: /etc/os-release names no VERSION_CODENAME")
    listed = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT)"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    lines: list[str] = []
    for entry in listed.stdout.splitlines():
        parts = entry.split()
        if len(parts) != 3:
            continue
        uri, release_name, component = parts
        if release_name != codename and not release_name.startswith(codename + "-"):
            continue
        line = f"deb {uri} {suite}{release_name[len(codename) :]} {component}"
        if line not in lines:
            lines.append(line)
    if not lines:
        raise SystemExit(
            f"image: no apt source of Debian {codename} on this machine "
            "(run apt-get update): cannot make stand-in base images"
        )
    return "\n".join(lines) + "\n"


def stand_in_tarball(stand_in: StandIn) -> Path:
    """The stand-in's root filesystem as a tar, made once per recipe and kept in the cache."""
    sources = machine_apt_sources(stand_in.suite)
    directory = cache_dir() / "stand-ins"
    directory.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", stand_in.name)
    tarball = directory / f"{slug}-{stand_in.key(sources)}.tar"
    if tarball.exists():
        log(f"stand-in for {stand_in.name}: cached {tarball}")
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("image: mmdebstrap is not installed (apt-get install mmdebstrap)")
    log(f"stand-in for {stand_in.name}: Debian {stand_in.suite} {' '.join(stand_in.packages)}")
    partial = tarball.with_suffix(".partial.tar")
    started = time.monotonic()
    run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=" + ",".join(stand_in.packages),
            # What an image never uses: documentation, manuals, translations.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
            *(f"--customize-hook={hook}" for hook in stand_in.hooks()),
            stand_in.suite,
            str(partial),
            "-",  # the sources come from standard input
        ],
        input_text=sources,
    )
    partial.rename(tarball)
    for stale in directory.glob(f"{slug}-*.tar"):
        if stale != tarball:
            stale.unlink()
    log(f"stand-in for {stand_in.name}: made in {time.monotonic() - started:.0f} s")
    return tarball


def _exists(engine: str, name: str, env: Mapping[str, str]) -> bool:
    args = ["podman", "image", "exists", name] if engine == "podman" else [
        "docker", "image", "inspect", name]  # fmt: skip
    return run(args, env, check=False, quiet=True).returncode == 0


def ensure_base(engine: str, name: str, env: Mapping[str, str]) -> str:
    """Makes base image `name` available to `engine`; returns the reference to build or run it
    by: its official name when it is the real image, else its stand-in's own name."""
    full, local = qualified(name), stand_in_name(name)
    if _exists(engine, full, env):
        if not is_stand_in(engine, full, env):
            return full
        # A stand-in an older version of this script kept under the official name: untagged,
        # so that no later push or pull-less build can take it for the real image.
        run([engine, "rmi", full], env, check=False, quiet=True)
    if _exists(engine, local, env):
        return local
    try:
        pulled = run([engine, "pull", "-q", full], env, check=False, quiet=True, timeout=300)
    except subprocess.TimeoutExpired:
        pulled = subprocess.CompletedProcess([], 1)
    if pulled.returncode == 0:
        log(f"{name}: pulled")
        return full
    stand_in = stand_ins().get(name)
    if stand_in is None:
        raise SystemExit(f"image: cannot pull {name} and no stand-in is known for it")
    log("=" * 78)
    log(f"{name} cannot be pulled (no registry reachable): using a STAND-IN made from")
    log(f"Debian {stand_in.suite} packages, as {local}.")
    log("Fine for tests; an image built on it is never pushed.")
    log("=" * 78)
    tarball = stand_in_tarball(stand_in)
    changes = [arg for change in stand_in.changes for arg in ("--change", change)]
    changes += ["--change", f"LABEL {STAND_IN_LABEL}=debian-" + stand_in.suite]
    run([engine, "import", "-q", *changes, str(tarball), local], env, quiet=True)
    return local


def is_stand_in(engine: str, name: str, env: Mapping[str, str]) -> bool:
    """Whether image `name` is a stand-in or was built on one (images inherit its label)."""
    if name.startswith(STAND_IN_PREFIX):
        return True
    labels = run(
        [engine, "image", "inspect", "--format", "{{json .Config.Labels}}", name], env, quiet=True
    ).stdout
    return STAND_IN_LABEL in labels


def push(engine: str, tag: str, env: Mapping[str, str]) -> None:
    """Pushes `tag`, unless it is a stand-in or was built on one: a registry must never serve
    Debian packages under the name of an official image, nor an app built on them."""
    if is_stand_in(engine, tag, env):
        raise SystemExit(f"image: not pushing {tag}: it is, or was built on, a stand-in base")
    run([engine, "push", tag], env)


# --- the build ---------------------------------------------------------------------------------


def pip_trust_mounts(workdir: Path) -> list[str]:
    """When this machine's pip trusts a custom CA (a TLS-intercepting proxy, as on these CI
    machines), the build's pip trusts the same bundle: bind mounts into the RUN steps only, so
    nothing of it lands in the image. Elsewhere: nothing."""
    bundle = os.environ.get("PIP_CERT")
    if not bundle:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bundle = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.cert"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
    if not bundle or not Path(bundle).is_file():
        return []
    conf = workdir / "pip.conf"
    conf.write_text("[global]\ncert = /run/userapi-build/ca.pem\n")
    return [
        "--volume",
        f"{Path(bundle).resolve()}:/run/userapi-build/ca.pem:ro",
        "--volume",
        f"{conf}:/etc/pip.conf:ro",
    ]


@dataclass
class Sizes:
    total: int
    base: int
    app_layer: int
    app_layer_compressed: int

    def text(self) -> str:
        mb = 1e6
        return (
            f"{self.total / mb:.1f} MB total, {self.base / mb:.1f} MB base, "
            f"app layer {self.app_layer / mb:.1f} MB ({self.app_layer_compressed / mb:.1f} MB "
            "gzip-compressed)"
        )


def image_sizes(engine: str, tag: str, base: str, env: Mapping[str, str]) -> Sizes:
    """Uncompressed sizes from the saved image's layer tars, and the app layer (the venv copied
    into the runtime stage: by far the largest layer above the base) also gzip-compressed, as a
    registry stores it."""
    base_layers = len(
        json.loads(
            run(
                [
                    engine,
                    "image",
                    "inspect",
                    "--format",
                    "{{json .RootFS.Layers}}",
                    qualified(base),
                ],
                env,
                quiet=True,
            ).stdout
        )
    )
    with tempfile.TemporaryDirectory(prefix="userapi-image-") as tmp:
        archive = Path(tmp) / "image.tar"
        save = [engine, "save", "-o", str(archive), tag]
        if engine == "podman":
            save[2:2] = ["--format", "docker-archive"]
        run(save, env, quiet=True)
        with tarfile.open(archive) as saved:
            manifest = json.load(_member(saved, "manifest.json"))
            layers = manifest[0]["Layers"]
            sizes = [saved.getmember(layer).size for layer in layers]
            above = range(base_layers, len(layers))
            app = max(above, key=lambda index: sizes[index])
            compressed = len(gzip.compress(_member(saved, layers[app]).read(), compresslevel=6))
    return Sizes(
        total=sum(sizes),
        base=sum(sizes[:base_layers]),
        app_layer=sizes[app],
        app_layer_compressed=compressed,
    )


def _member(archive: tarfile.TarFile, name: str):  # type: ignore[no-untyped-def]
    extracted = archive.extractfile(name)
    if extracted is None:
        raise SystemExit(f"image: {name} missing from the saved image")
    return extracted


@dataclass
class Built:
    tag: str
    engine: str
    stand_in_bases: list[str]
    seconds: float
    sizes: Sizes
    # Each base image's name (the Dockerfile's, the chart's) -> the reference it is available
    # under: the official name, or its stand-in's.
    bases: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(
            {
                "tag": self.tag,
                "engine": self.engine,
                "stand_in_bases": self.stand_in_bases,
                "build_seconds": round(self.seconds, 2),
                "size_bytes": self.sizes.total,
                "base_bytes": self.sizes.base,
                "app_layer_bytes": self.sizes.app_layer,
                "app_layer_compressed_bytes": self.sizes.app_layer_compressed,
            }
        )


def build(
    tag: str = DEFAULT_TAG,
    *,
    dockerfile: Path | None = None,
    context: Path = ROOT,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    with_pgbouncer: bool = False,
    measure: bool = True,
) -> Built:
    """Builds `dockerfile` (the project's by default) as `tag`; with `with_pgbouncer`, also makes
    the chart's PgBouncer image available (pulled or a stand-in) for the pod tests."""
    engine = engine_name()
    engine_env = podman_env(env) if engine == "podman" else dict(env or os.environ)
    dockerfile = dockerfile or ROOT / "Dockerfile"
    names = [python_base(), pgbouncer_image()] if with_pgbouncer else [python_base()]
    bases = {name: ensure_base(engine, name, engine_env) for name in names}
    stand_in_bases = [name for name, ref in bases.items() if ref.startswith(STAND_IN_PREFIX)]
    base = bases[python_base()]
    with tempfile.TemporaryDirectory(prefix="userapi-build-") as tmp:
        # FROM the reference ensure_base gave: a stand-in is never under the official name.
        args = [engine, "build", "-f", str(dockerfile), "-t", tag, "--build-arg",
                f"PYTHON_IMAGE={base}"]  # fmt: skip
        if target:
            args += ["--target", target]
        if engine == "podman":
            # Host networking: Debian's podman has no bridge stack (netavark) installed here,
            # and a build needs nothing but to reach PyPI.
            args += ["--network", "host", "--pull=never"]
        started = time.monotonic()
        mounts = pip_trust_mounts(Path(tmp)) if engine == "podman" else []
        if mounts:
            # buildah leaves an empty mount point in every layer a RUN step with a --volume
            # makes. So the mounts go only to the build stage, which needs PyPI; the whole
            # build then finds that stage cached and runs the runtime stage without them.
            run([*args, *mounts, "--target", "build", str(context)], engine_env)
        run([*args, str(context)], engine_env)
        seconds = time.monotonic() - started
    sizes = image_sizes(engine, tag, base, engine_env) if measure else Sizes(0, 0, 0, 0)
    return Built(tag, engine, stand_in_bases, seconds, sizes, bases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=os.environ.get("IMAGE", DEFAULT_TAG))
    parser.add_argument("--file", type=Path, default=None, help="default: ./Dockerfile")
    parser.add_argument("--context", type=Path, default=ROOT)
    parser.add_argument("--target", default=None)
    parser.add_argument("--with-pgbouncer", action="store_true", help="also the sidecar image")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--push", action="store_true", help="then push it (skaffold -p cloud)")
    args = parser.parse_args(argv)
    built = build(
        args.tag,
        dockerfile=args.file,
        context=args.context,
        target=args.target,
        with_pgbouncer=args.with_pgbouncer,
    )
    if args.json:
        print(built.as_json())
    else:
        on = (
            f" on STAND-IN bases ({', '.join(built.stand_in_bases)})"
            if built.stand_in_bases
            else ""
        )
        print(f"{built.tag}: built by {built.engine} in {built.seconds:.1f} s{on}")
        print(f"{built.tag}: {built.sizes.text()}")
    if args.push:
        if built.stand_in_bases:
            raise SystemExit(f"image: not pushing {built.tag}: it was built on stand-in bases")
        push(
            built.engine, built.tag, podman_env() if built.engine == "podman" else dict(os.environ)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
