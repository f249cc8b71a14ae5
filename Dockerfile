# One image for every endpoint: they share the runtime and differ only in the router they
# serve (`userapi serve <endpoint>`), and importing one endpoint loads no other (see
# docs/architecture.md). Per-endpoint images would duplicate ~all bytes and gain nothing.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# binutils' strip, for the wheels' extension modules (below); in this stage only.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# Hash-checked: the image gets exactly the locked runtime dependencies, and no test tools.
# python3, not python: Debian's own python (a stand-in base, see harness/images.py) has no
# `python` command; the official image has both.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation -w /tmp/wheels . \
 && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
 # The installers leave the runtime venv: a quarter of its bytes, and setuptools' .pth hook
 # ran at every interpreter start. Nothing at run time installs anything.
 && /opt/venv/bin/python -m pip uninstall -q -y pip setuptools wheel \
 # The wheels' extension modules ship their symbol tables (uvloop 14 MB, asyncpg 8 MB, ...):
 # stripped, the venv loses a quarter of its bytes; nothing at run time reads them.
 && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
 # Bytecode compiled now: a read-only root filesystem cannot cache it at cold start.
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib

FROM ${PYTHON_IMAGE} AS base
# The official image installs pip, setuptools and wheel into its system python too; a runtime
# image needs none of them (Debian's python, in a stand-in base, has none).
RUN if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall -q -y pip setuptools wheel; \
    fi
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080
COPY --from=build /opt/venv /opt/venv
# A numeric, non-root user: Kubernetes' runAsNonRoot can only verify numeric ids.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["userapi", "serve"]
CMD ["get-user"]

# skaffold dev only: files synced into site-packages are served by `userapi reload`, which
# forks a new app process for each change (commands/reload.py) and serves USERAPI_ENDPOINT.
# This stage keeps the package writable by the app's user; the chart relaxes
# readOnlyRootFilesystem for it alone.
FROM base AS dev
USER 0
RUN chown -R 10001:10001 /opt/venv/lib/python3.11/site-packages/userapi
USER 10001:10001
ENTRYPOINT ["userapi", "reload"]
CMD []

# Last, so that a plain `docker build .` builds it (the image the chart and the manifests
# run), not the dev stage above, whose entrypoint takes no endpoint argument.
FROM base AS runtime
