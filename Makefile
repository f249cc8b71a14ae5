# The entry points a newcomer needs. `make` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.DEFAULT_GOAL := help
.PHONY: help install dev emulator lint test test-fast bench image openapi manifests clean \
	bootstrap-dev bootstrap-test bootstrap-bench controlplane cluster cluster-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# What each target needs from the machine, installed with apt-get when missing (Debian): the
# order-only prerequisites run first even under `make -j`.
bootstrap-dev bootstrap-test bootstrap-bench:
	@PYTHON=$(PYTHON) scripts/bootstrap $(@:bootstrap-%=%)

$(VENV)/.installed: pyproject.toml | bootstrap-dev
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

KNATIVE_SCHEMA := tests/deploy/knative-schema
$(KNATIVE_SCHEMA)/node_modules/.package-lock.json: $(KNATIVE_SCHEMA)/package-lock.json | bootstrap-test
	cd $(KNATIVE_SCHEMA) && npm ci --no-audit --no-fund --loglevel=error

install: $(VENV)/.installed ## create .venv with userapi, its test and bench tools

dev: bootstrap-dev install ## every endpoint + the Auth0 emulator on http://127.0.0.1:8000
	$(VENV)/bin/userapi dev

emulator: install ## the Auth0 emulator alone on :8765
	$(VENV)/bin/userapi emulator

lint: install ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: bootstrap-test lint controlplane $(KNATIVE_SCHEMA)/node_modules/.package-lock.json ## lint, then every test (starts its own Redis, PostgreSQL, PgBouncer, control plane)
	$(PY) -m pytest -n 2 --durations=15  # two workers: tests/conftest.py says what stays together

test-fast: install controlplane ## tests that need no servers (kubectl builds the overlays)
	$(PY) -m pytest -m 'not integration and not cluster'

# Go builds of etcd, Kubernetes, Knative, kwok and the real node's containerd, CoreDNS and
# Traefik (controlplane/VERSIONS): tens of minutes the
# first time, nothing when unchanged. Its progress shows here rather than inside a silent test.
controlplane: | bootstrap-test
	@controlplane/build >/dev/null

cluster: install controlplane ## a real Kubernetes + Knative Serving with a real node and the chart's images; prints INGRESS=..., VALUES=..., KUBECONFIG=...
	@$(PY) -m harness.cluster up

cluster-down: install ## stop everything `make cluster` started
	@$(PY) -m harness.cluster down

bench: bootstrap-bench install controlplane ## measure cold start, warm path, cache, stampede, connection budget
	$(PY) -m bench

IMAGE ?= localhost/userapi:dev
CLUSTER_STATE ?= .dev/cluster
# TARGET: a Dockerfile stage (skaffold dev builds `dev`); PUSH=true pushes $(IMAGE) once built
# (skaffold's custom builder passes its $$PUSH_IMAGE). LOAD=skaffold (skaffold.yaml's builds):
# an image not pushed is also imported into `make cluster`'s node, which has no registry, under
# the name skaffold deploys, when the current kube context is that cluster (docs/deploying.md).
image: ## build the container image as $(IMAGE) (Docker if an engine answers, else podman) and report its size
	$(PYTHON) harness/images.py --tag $(IMAGE)$(if $(TARGET), --target $(TARGET))$(if $(filter true,$(PUSH)), --push)
	$(if $(filter true,$(PUSH)),,$(if $(and $(filter skaffold,$(LOAD)),$(wildcard $(CLUSTER_STATE)/network.json)),$(PY) -m harness.cluster load $(IMAGE) --for-skaffold --state $(CLUSTER_STATE)))

openapi: install ## regenerate docs/openapi.json from the code
	$(VENV)/bin/userapi openapi --output docs/openapi.json

manifests: install ## regenerate manifests/ from the chart, and docs/configuration.md's reference tables
	$(PY) manifests/generate.py
	$(PY) -m manifests.reference_docs

clean: ## remove the venv, caches and the dev database
	rm -rf $(VENV) .dev .mypy_cache .ruff_cache .pytest_cache
