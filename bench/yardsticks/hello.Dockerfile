# The container cold-start yardstick (bench/scenarios/container.py): bench/yardsticks/hello_app.py
# in an image built exactly as the project's Dockerfile builds userapi's (same base, same
# hash-locked dependencies in a venv without installers, stripped, bytecode compiled, same
# non-root user), so the two differ only in the application. The build stage's first steps are
# the project Dockerfile's, word for word: the build cache shares them.
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
COPY bench/yardsticks/hello_app.py /opt/venv/lib/python3.11/site-packages/hello_app.py
RUN /opt/venv/bin/python -m pip uninstall -q -y pip setuptools wheel \
 && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib

FROM ${PYTHON_IMAGE}
RUN if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall -q -y pip setuptools wheel; \
    fi
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["uvicorn", "hello_app:app", "--host", "0.0.0.0", "--port", "8080", \
            "--log-level", "warning", "--no-access-log", "--no-server-header", "--ws", "none"]
