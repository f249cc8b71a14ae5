"""skaffold.yaml: it cannot run here (no Docker engine, no cluster), so its wiring is checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_helm import knative_services, render

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())  # type: ignore[no-any-return]


def _profile(name: str) -> dict[str, Any]:
    return next(p for p in _config()["profiles"] if p["name"] == name)


def test_the_config_targets_skaffold_v4beta14_and_the_chart() -> None:
    config = _config()
    assert config["apiVersion"] == "skaffold/v4beta14"
    release = config["manifests"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
    for path in release["valuesFiles"] + config["manifests"]["kustomize"]["paths"]:
        assert (ROOT / path).exists(), path


def test_value_templates_name_the_artifact_as_skaffold_spells_it() -> None:
    image = _config()["build"]["artifacts"][0]["image"]
    spelled = re.sub(r"[-/.:]", "_", image)
    templates = _config()["manifests"]["helm"]["releases"][0]["setValueTemplates"]
    assert all(spelled in value for value in templates.values())
    local = _profile("local")["patches"]
    local_image = next(p["value"] for p in local if p["path"].endswith("/image"))
    local_templates = next(p["value"] for p in local if p["path"].endswith("setValueTemplates"))
    assert local_image.startswith(("kind.local/", "dev.local/", "ko.local/"))
    assert all(re.sub(r"[-/.:]", "_", local_image) in v for v in local_templates.values())


def test_the_dev_profile_syncs_python_into_the_dev_stage() -> None:
    dev = _profile("dev")
    assert dev["activation"] == [{"command": "dev"}]
    patches = {p["path"]: p.get("value") for p in dev["patches"]}
    assert patches["/build/artifacts/0/docker/target"] == "dev"
    sync = patches["/build/artifacts/0/sync"]["manual"][0]
    assert sync["src"] == "services/userapi/**/*.py"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM base AS dev" in dockerfile
    assert sync["dest"] in dockerfile  # the dev stage makes exactly that directory writable
    assert "--reload" in dockerfile
    assert patches["/manifests/helm/releases/0/setValues"]["devMode"] is True


def test_dev_mode_relaxes_the_root_filesystem_only_when_asked() -> None:
    for dev_mode in (False, True):
        service = knative_services(render({"devMode": dev_mode}))["list-users"]
        app = service["spec"]["template"]["spec"]["containers"][0]
        assert app["securityContext"]["readOnlyRootFilesystem"] is (not dev_mode)
        env = {e["name"]: e.get("value") for e in app["env"]}
        assert (env.get("USERAPI_ENDPOINT") == "list-users") is dev_mode
        assert ("args" in app) is (not dev_mode)
