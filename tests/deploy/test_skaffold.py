"""skaffold.yaml through real skaffold (built from its Go module by controlplane/build) and real
Helm: `skaffold diagnose` and `skaffold render` for every profile combination, on kubeconfig
contexts named like the local clusters of docs/deploying.md, with every rendered object checked
like the chart's. Nothing here needs a cluster or builds an image (tests/cluster does both)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from userapi.endpoints import ENDPOINTS

from harness.podman import Podman
from harness.podman import available as podman_available
from harness.skaffold import Skaffold, SkaffoldError, docker_api
from tests.support import gateway, knative_rules
from tests.support.chart import KUBERNETES_VERSION, render
from tests.support.knative_schema import schema_errors

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONTEXTS = ("kind-knative", "docker-desktop", "k3d-userapi", "minikube")
# A bare `knative` (kn quickstart minikube) or `userapi` (make cluster) could as well name a
# production cluster: those take `-p local`, never the emulator and dev Secrets by their name.
CLOUD_CONTEXTS = ("gke_my-project_europe-west1_userapi", "userapi-admin@userapi", "knative",
                  "userapi", "prod-kind-knative")  # fmt: skip
GKE_REPO = "europe-docker.pkg.dev/my-project/userapi"
DIGEST = "sha256:" + "ab" * 32
# Every combination a user can ask for: `dev` comes with `skaffold dev`, `local` with a local
# context (or -p local), `cloud` with -p cloud on a remote context.
COMBINATIONS = (("local",), ("local", "dev"), ("cloud",), ("cloud", "dev"))


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Skaffold:
    tool = Skaffold.create(tmp_path_factory.mktemp("skaffold"), LOCAL_CONTEXTS + CLOUD_CONTEXTS)
    # The cloud profile's values: the user's copy of an overlay's (skaffold-values.yaml is
    # ignored by git).
    values = yaml.safe_load((ROOT / "manifests" / "overlays" / "gke" / "values.yaml").read_text())
    (tool.workdir / "skaffold-values.yaml").write_text(yaml.safe_dump(values))
    return tool


def context_for(profiles: tuple[str, ...]) -> str:
    return CLOUD_CONTEXTS[0] if "cloud" in profiles else LOCAL_CONTEXTS[0]


def effective(tool: Skaffold, context: str, *args: str) -> dict[str, Any]:
    """The configuration skaffold would run in `context`, after profile activation and patches."""
    out = tool.run("diagnose", "--yaml-only", *args, env=tool.in_context(context)).stdout
    return yaml.safe_load(out)  # type: ignore[no-any-return]


def rendered(tool: Skaffold, context: str, *args: str) -> list[dict[str, Any]]:
    out = tool.run("render", "--offline", *args, env=tool.in_context(context)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def images(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Container images by the object that runs them."""
    found: dict[str, set[str]] = {}
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            found.setdefault(obj["metadata"]["name"], set()).add(container["image"])
    return found


def app_images(objects: list[dict[str, Any]]) -> set[str]:
    found = images(objects)
    runs_the_app = (*ENDPOINTS, "userapi-migrate")
    return {i for name in runs_the_app for i in found[name] if "pgbouncer" not in i}


def check_objects(objects: list[dict[str, Any]]) -> None:
    """What the chart's own tests check of its render, on skaffold's render."""
    keys = Counter((o["kind"], o["metadata"]["name"]) for o in objects)
    assert [key for key, count in keys.items() if count > 1] == []  # nothing rendered twice
    services = [o for o in objects if o["apiVersion"].startswith("serving.knative.dev")]
    assert {s["metadata"]["name"] for s in services} == set(ENDPOINTS)
    for service in services:
        assert knative_rules.problems(service) == []
    assert schema_errors(services) == {}
    for obj in objects:
        if obj["apiVersion"].startswith(gateway.GROUP):  # the cloud profile's one API host
            assert gateway.schema_problems(obj) == [], obj["kind"]
        elif not obj["apiVersion"].startswith("serving.knative.dev"):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- the configuration skaffold runs ---------------------------------------------------------


@pytest.mark.parametrize("profiles", COMBINATIONS, ids="+".join)
def test_each_combination_has_one_deployer_helm(tool: Skaffold, profiles: tuple[str, ...]) -> None:
    config = effective(tool, context_for(profiles), "-p", ",".join(profiles))
    assert config["apiVersion"] == "skaffold/v4beta14"
    assert set(config["manifests"]) == {"helm"}  # no kustomize or raw manifests beside the chart
    assert set(config["deploy"]) <= {"helm", "statusCheckDeadlineSeconds", "logs"}
    assert "helm" in config["deploy"]
    assert len(config["manifests"]["helm"]["releases"]) == 1


@pytest.mark.parametrize("context", LOCAL_CONTEXTS)
def test_local_clusters_activate_the_local_profile(tool: Skaffold, context: str) -> None:
    config = effective(tool, context)
    assert [a["image"] for a in config["build"]["artifacts"]] == [
        "dev.local/userapi",
        "dev.local/userapi-emulator",
    ]
    values = config["manifests"]["helm"]["releases"][0]["setValues"]  # --set, so strings
    assert values["localBackingServices.enabled"] == values["devSecrets.create"] == "true"


@pytest.mark.parametrize("context", CLOUD_CONTEXTS)
def test_other_clusters_do_not(tool: Skaffold, context: str) -> None:
    config = effective(tool, context)
    assert [a["image"] for a in config["build"]["artifacts"]] == ["userapi"]
    assert config["manifests"]["helm"]["releases"][0]["setValues"] == {"devMode": "false"}


def test_make_clusters_kubeconfig_adds_its_values_file(tool: Skaffold) -> None:
    """`make cluster`'s node pulls nothing: with its kubeconfig, the release also gets the values
    naming the images it imported; with any other, not."""
    layout = tool.workdir / ".dev" / "cluster"
    layout.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(tool.kubeconfig.read_text())
    config["current-context"] = "userapi"
    (layout / "kubeconfig").write_text(yaml.safe_dump(config))
    local = "manifests/overlays/local/values.yaml"
    for kubeconfig, values in (
        (layout / "kubeconfig", [".dev/cluster/values.yaml", local]),
        (tool.in_context("userapi")["KUBECONFIG"], [local]),
    ):  # fmt: skip
        out = tool.run("diagnose", "--yaml-only", "-p", "local,dev",
                       env={"KUBECONFIG": str(kubeconfig)}).stdout  # fmt: skip
        release = yaml.safe_load(out)["manifests"]["helm"]["releases"][0]
        files = [str(Path(f).relative_to(tool.workdir)) for f in release["valuesFiles"]]
        assert files == ["helm/userapi/values.yaml", *values]
    # Every build command imports into that node when it is the current context.
    for artifact in effective(tool, "userapi", "-p", "local,dev")["build"]["artifacts"]:
        assert " LOAD=skaffold" in artifact["custom"]["buildCommand"]


def test_the_dev_profile_adds_its_values_key_by_key(tool: Skaffold) -> None:
    config = effective(tool, "kind-knative", "-p", "dev")
    release = config["manifests"]["helm"]["releases"][0]
    assert release["setValues"] == {
        "localBackingServices.enabled": "true",
        "localBackingServices.auth0Emulator": "true",
        "devSecrets.create": "true",
        "devMode": "true",
        "endpointDefaults.minScale": "1",
    }
    app, emulator = config["build"]["artifacts"]
    assert app["custom"]["buildCommand"].endswith("TARGET=dev")
    assert app["sync"]["manual"][0]["src"] == "services/userapi/**/*.py"
    assert "sync" not in emulator  # file sync matches containers by image: never the emulator
    assert "TARGET" not in emulator["custom"]["buildCommand"]
    (forward,) = config["portForward"]
    assert forward == {"resourceType": "service", "resourceName": "auth0-emulator",
                       "namespace": "userapi", "port": 8765, "localPort": 8765,
                       "address": "127.0.0.1"}  # fmt: skip


# --- what it renders -------------------------------------------------------------------------


@pytest.mark.parametrize("profiles", COMBINATIONS, ids="+".join)
def test_every_combination_renders_valid_objects(tool: Skaffold, profiles: tuple[str, ...]) -> None:
    args = ["-p", ",".join(profiles), "--digest-source=tag"]
    if "cloud" in profiles:
        args.append(f"--default-repo={GKE_REPO}")
    if profiles == ("cloud", "dev"):
        # `skaffold dev` against a real cluster would run userapi reload on a writable root
        # filesystem there: the chart refuses devMode on a release not marked local.
        with pytest.raises(SkaffoldError, match=r"local-only settings .*devMode"):
            rendered(tool, context_for(profiles), *args)
        return
    objects = rendered(tool, context_for(profiles), *args)
    check_objects(objects)
    kinds = Counter(o["kind"] for o in objects)
    local = "local" in profiles
    # Every endpoint's NetworkPolicy and the migration Job's; with the local services, theirs,
    # and the throwaway Secrets (Auth0, database, shared-cache key).
    endpoint_policies = len(ENDPOINTS) + 1
    assert (kinds["Deployment"], kinds["Secret"], kinds["NetworkPolicy"]) == (
        (3, 3, endpoint_policies + 2) if local else (0, 0, endpoint_policies)
    )
    job = next(o for o in objects if o["kind"] == "Job")
    # The migration hook runs after the Secrets and PostgreSQL the chart creates, or before
    # everything when it needs nothing from the release.
    hook = "post-install,pre-upgrade" if local else "pre-install,pre-upgrade"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == hook
    app = next(iter(knative_services_of(objects).values()))["spec"]["template"]
    assert ("args" in app["spec"]["containers"][0]) is ("dev" not in profiles)


def knative_services_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["apiVersion"].startswith("serving")}


@pytest.mark.parametrize("context", ["kind-knative", "minikube"])
def test_local_images_are_never_resolved_and_the_emulator_has_its_own(
    tool: Skaffold, context: str
) -> None:
    objects = rendered(tool, context, "--digest-source=tag")
    (app,) = app_images(objects)
    (emulator,) = images(objects)["auth0-emulator"]
    # dev.local is in Knative's registries-skipping-tag-resolving: no registry is asked.
    assert app.startswith("dev.local/userapi:")
    assert emulator.startswith("dev.local/userapi-emulator:")
    # File sync copies into containers whose image is the app artifact's, exactly.
    assert emulator != app


def test_default_repo_pushes_to_the_documented_repository(tool: Skaffold) -> None:
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    for repo, expected in [
        (GKE_REPO, f"{GKE_REPO}/userapi"),  # Artifact Registry: REGISTRY ends in the repository
        (ecr, f"{ecr}/userapi"),
        ("youracr.azurecr.io", "youracr.azurecr.io/userapi"),
    ]:
        args = ["build", "--dry-run", "-p", "cloud", f"--default-repo={repo}", "-q"]
        out = tool.run(*args, "--file-output=-", env=tool.in_context(CLOUD_CONTEXTS[0])).stdout
        (build,) = json.loads(out)["builds"]
        assert build["tag"].rsplit(":", 1)[0] == expected


def test_a_pushed_image_is_deployed_by_digest(tool: Skaffold) -> None:
    builds = tool.workdir / "builds.json"
    pushed = f"{GKE_REPO}/userapi:v1@{DIGEST}"
    builds.write_text(json.dumps({"builds": [{"imageName": "userapi", "tag": pushed}]}))
    # --digest-source=tag: take the digest from the build's output, as a pipeline that ran
    # `skaffold build --file-output` would, instead of asking the registry.
    args = ["-p", "cloud", f"--build-artifacts={builds}", "--digest-source=tag"]
    objects = rendered(tool, CLOUD_CONTEXTS[0], *args)
    check_objects(objects)
    assert app_images(objects) == {f"{GKE_REPO}/userapi@{DIGEST}"}


def test_dev_mode_relaxes_the_root_filesystem_only_when_asked() -> None:
    for dev_mode in (False, True):
        service = knative_services_of(render({"local": True, "devMode": dev_mode}))["list-users"]
        app = service["spec"]["template"]["spec"]["containers"][0]
        assert app["securityContext"]["readOnlyRootFilesystem"] is (not dev_mode)
        env = {e["name"]: e.get("value") for e in app["env"]}
        assert (env.get("USERAPI_ENDPOINT") == "list-users") is dev_mode
        assert ("args" in app) is (not dev_mode)


def test_the_sync_destination_is_what_the_dev_stage_makes_writable() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    dev = next(p for p in config["profiles"] if p["name"] == "dev")
    sync = next(p["value"] for p in dev["patches"] if p["path"].endswith("/sync"))["manual"][0]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM base AS dev" in dockerfile
    assert f"chown -R 10001:10001 {sync['dest']}" in dockerfile
    dev_stage = dockerfile.split("FROM base AS dev", 1)[1].split("\nFROM ", 1)[0]
    # `userapi reload` watches the installed package, the sync's destination.
    assert 'ENTRYPOINT ["userapi", "reload"]' in dev_stage
    assert sync["dest"] == "/opt/venv/lib/python3.11/site-packages/userapi"


# --- skaffold build: the custom builder is `make image` ---------------------------------------


def test_dependencies_are_what_the_dockerfile_copies() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    listed = set(config["build"]["artifacts"][0]["custom"]["dependencies"]["paths"])
    copied = {"Dockerfile"}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= set(line.split()[1:-1])
    assert listed == copied


@pytest.mark.integration
def test_skaffold_build_runs_make_image_for_both_artifacts(tmp_path: Path) -> None:
    assert podman_available() is None, podman_available()
    tool = Skaffold.create(tmp_path / "skaffold", LOCAL_CONTEXTS)
    builds = tool.workdir / "builds.json"
    with Podman(tmp_path / "podman") as podman:
        with docker_api(podman) as engine:
            # `skaffold dev`'s build: the app from the dev stage, the emulator from the runtime.
            args = ["build", "-p", "local,dev", f"--file-output={builds}"]
            tool.run(*args, env={**tool.in_context("kind-knative"), **engine}, timeout=1800,
                     offline=False)  # fmt: skip
        tags = {b["imageName"]: b["tag"] for b in json.loads(builds.read_text())["builds"]}
        assert set(tags) == {"dev.local/userapi", "dev.local/userapi-emulator"}

        def entrypoint(tag: str) -> list[str]:
            (image,) = json.loads(podman("image", "inspect", tag).stdout)
            return list(image["Config"]["Entrypoint"])

        assert entrypoint(tags["dev.local/userapi"]) == ["userapi", "reload"]
        assert entrypoint(tags["dev.local/userapi-emulator"]) == ["userapi", "serve"]
