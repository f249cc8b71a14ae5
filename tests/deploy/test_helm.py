"""The Helm chart, rendered by real Helm (helm-python-sdk bundles Helm's Go library)."""

from __future__ import annotations

import copy
import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from userapi import endpoints
from userapi.endpoints import ENDPOINTS

from manifests.generate import deep_merge
from tests.support import knative_rules
from tests.support.chart import CHART, KUBERNETES_VERSION, REQUIRED, knative_services, render


def test_lint_strict_is_clean() -> None:
    report = helm.lint(CHART, copy.deepcopy(REQUIRED), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_core_objects_pass_the_kubernetes_schema() -> None:
    core = [o for o in render() if not o["apiVersion"].startswith("serving.knative.dev")]
    assert {o["kind"] for o in core} == {"ConfigMap", "Job", "NetworkPolicy", "ServiceAccount"}
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_knative_services_pass_the_webhook_rules(endpoint: str) -> None:
    service = knative_services(render())[endpoint]
    assert knative_rules.problems(service) == []
    # Each container is also a valid Kubernetes Container.
    for container in service["spec"]["template"]["spec"]["containers"]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x"},
            "spec": {"containers": [container]},
        }
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_scale_to_zero_by_default_and_every_knob_is_configurable() -> None:
    default = knative_services(render())["get-user"]["spec"]["template"]
    assert default["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    tuned = knative_services(
        render(
            {
                "endpoints": {
                    "getUser": {
                        "minScale": 1,
                        "maxScale": 4,
                        "initialScale": 2,
                        "target": 20,
                        "activationScale": 3,
                        "containerConcurrency": 40,
                        "timeoutSeconds": 15,
                    }
                }
            }
        )
    )["get-user"]["spec"]["template"]
    annotations = tuned["metadata"]["annotations"]
    assert {k.split("/")[1]: v for k, v in annotations.items()} == {
        "min-scale": "1",
        "max-scale": "4",
        "initial-scale": "2",
        "target": "20",
        "activation-scale": "3",
    }
    assert (tuned["spec"]["containerConcurrency"], tuned["spec"]["timeoutSeconds"]) == (40, 15)
    other = knative_services(render())["list-users"]["spec"]["template"]["metadata"]["annotations"]
    assert other["autoscaling.knative.dev/min-scale"] == "0"  # untouched by getUser's block


def test_containers_are_locked_down() -> None:
    for service in knative_services(render()).values():
        for container in service["spec"]["template"]["spec"]["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]


def test_the_app_gets_settings_from_a_configmap_and_secrets_from_secret_refs() -> None:
    objects = render()
    assert "Secret" not in {o["kind"] for o in objects}  # no secret value anywhere
    app = knative_services(objects)["get-user"]["spec"]["template"]["spec"]["containers"][0]
    assert app["args"] == ["get-user"]
    assert app["envFrom"] == [{"configMapRef": {"name": "demo-config"}}]
    env = {e["name"]: e for e in app["env"]}
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert env["DATABASE_URL"]["value"] == "postgresql://userapi@127.0.0.1:6432/userapi"
    assert "readinessProbe" in app
    assert "periodSeconds" not in app["readinessProbe"]
    config = next(o for o in objects if o["metadata"]["name"] == "demo-config")["data"]
    assert not any("password" in k.lower() or k.lower() == "secret" for k in config)


def test_each_endpoint_names_only_the_secret_file_it_mounts() -> None:
    """The shared ConfigMap names no secret file: auth0-events mounts only `events-secret`, so
    a client-secret path there would point at nothing (and say it could read it)."""
    objects = render()
    config = next(o for o in objects if o["metadata"]["name"] == "demo-config")["data"]
    assert not any(name.endswith("_FILE") for name in config), sorted(config)
    for name, service in knative_services(objects).items():
        spec = service["spec"]["template"]["spec"]
        app = spec["containers"][0]
        files = {e["name"]: e["value"] for e in app["env"] if e["name"].endswith("_SECRET_FILE")}
        (volume,) = [v for v in spec["volumes"] if v["name"] == "auth0"]
        (mount,) = [m for m in app["volumeMounts"] if m["name"] == "auth0"]
        mounted = {f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]}
        assert set(files.values()) == mounted, (name, files, mounted)
        # The client secret exactly where the endpoint declares it calls the Management API.
        reads = "CLIENT" if endpoints.load(name).management_api else "EVENTS"
        assert list(files) == [f"AUTH0_{reads}_SECRET_FILE"], (name, files)


def test_the_pgbouncer_sidecar_runs_transaction_mode_with_a_cap() -> None:
    objects = render({"pgbouncer": {"maxDbConnections": 3}, "database": {"connectionBudget": 200}})
    ini = next(o for o in objects if o["metadata"]["name"] == "demo-pgbouncer")["data"][
        "pgbouncer.ini"
    ]
    assert "pool_mode = transaction" in ini
    assert "max_db_connections = 3" in ini
    assert "listen_addr = 127.0.0.1" in ini
    sidecar = knative_services(objects)["get-user"]["spec"]["template"]["spec"]["containers"][1]
    assert sidecar["name"] == "pgbouncer"
    assert "ports" not in sidecar
    assert "readinessProbe" not in sidecar


def test_the_connection_budget_refuses_to_render_when_exceeded() -> None:
    with pytest.raises(helm.HelmError, match=r"connection budget exceeded.*76.*more than.*50"):
        render({"database": {"connectionBudget": 50}})
    with pytest.raises(helm.HelmError, match="maxScale"):
        render({"endpointDefaults": {"maxScale": 0}})
    # Disabling endpoints frees their share.
    disabled = {
        k: {"enabled": False}
        for k in ("listUsers", "createUser", "updateUser", "deleteUser", "auth0Events")
    }
    assert (
        len(knative_services(render({"database": {"connectionBudget": 20}, "endpoints": disabled})))
        == 1
    )


@pytest.mark.parametrize(
    "values",
    [
        {"endpoints": {"getUser": {"containerConcurrency": 1001}}},
        {"endpoints": {"getUser": {"timeoutSeconds": 601}}},
        {"endpoints": {"getUser": {"minScale": -1}}},
        {"endpoints": {"getUser": {"unknownKnob": 1}}},
        {"redis": {"url": "http://not-redis"}},
    ],
)
def test_the_values_schema_rejects_what_knative_would(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render(values)


def test_the_schema_file_is_valid_json() -> None:
    assert json.loads((CHART / "values.schema.json").read_text())["type"] == "object"


# Each webhook rule, shown to catch a manifest broken in exactly that way (Knative's real webhook
# refuses each of these too: tests/cluster/test_knative_webhook.py) ------------------------------


@pytest.mark.parametrize("case", sorted(knative_rules.BROKEN))
def test_each_webhook_rule_catches_its_broken_manifest(case: str) -> None:
    broken = knative_rules.broken(knative_services(render())["get-user"], case)
    assert knative_rules.problems(broken) != [], case


def test_local_backing_services_emulator_and_dev_secrets_are_behind_flags() -> None:
    def kinds(values: dict[str, Any]) -> set[tuple[str, str]]:
        return {
            (o["kind"], o["metadata"]["name"])
            for o in render(values)
            if not o["apiVersion"].startswith("serving.knative.dev")
        }

    base = kinds({})
    local = kinds({"local": True, "localBackingServices": {"enabled": True}})
    assert local - base == {
        ("Deployment", "redis"),
        ("Service", "redis"),
        ("Deployment", "postgres"),
        ("Service", "postgres"),
        ("NetworkPolicy", "redis-from-userapi"),
        ("NetworkPolicy", "postgres-from-userapi"),
    }
    emulator = kinds(
        {"local": True, "localBackingServices": {"enabled": True, "auth0Emulator": True}}
    )
    assert emulator - local == {("Deployment", "auth0-emulator"), ("Service", "auth0-emulator")}
    no_policies = kinds(
        {
            "local": True,
            "localBackingServices": {"enabled": True},
            "networkPolicies": {"create": False},
        }
    )
    assert not any(kind == "NetworkPolicy" for kind, _ in no_policies)
    assert kinds({"local": True, "devSecrets": {"create": True}}) - base == {
        ("Secret", "userapi-auth0"),
        ("Secret", "userapi-postgres"),
        ("Secret", "userapi-shared-cache"),
    }
    for obj in render(
        {"local": True, "localBackingServices": {"enabled": True, "auth0Emulator": True}}
    ):
        if not obj["apiVersion"].startswith("serving.knative.dev"):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_migration_job_removes_itself_so_a_new_image_can_be_applied() -> None:
    def job(values: dict[str, Any]) -> dict[str, Any]:
        return next(o for o in render(values) if o["kind"] == "Job")

    assert job({})["spec"]["ttlSecondsAfterFinished"] == 600
    assert (
        job({"migrations": {"ttlSecondsAfterFinished": 0}})["spec"]["ttlSecondsAfterFinished"] == 0
    )
    with pytest.raises(helm.HelmError, match="ttlSecondsAfterFinished"):
        render({"migrations": {"ttlSecondsAfterFinished": -1}})


def test_the_migration_hook_needs_nothing_the_release_creates_before_it_runs() -> None:
    def job(values: dict[str, Any]) -> dict[str, Any]:
        return next(o for o in render(values) if o["kind"] == "Job")

    production = job({})
    assert production["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = production["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod  # the chart's account does not exist yet
    assert pod["automountServiceAccountToken"] is False
    # Its Secret reference is one the operator creates before installing (docs/deploying.md).
    local = job(
        {"local": True, "localBackingServices": {"enabled": True}, "devSecrets": {"create": True}}
    )
    assert local["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_the_default_request_timeout_leaves_the_app_time_to_shut_down() -> None:
    # Knative sets terminationGracePeriodSeconds = timeoutSeconds, and queue-proxy's drain
    # takes at least 30 s of it before SIGTERM (shared reference: knative.md).
    drain, shutdown = 30, 10  # SHUTDOWN_TIMEOUT_SECONDS' default
    for service in knative_services(render()).values():
        assert service["spec"]["template"]["spec"]["timeoutSeconds"] > drain + shutdown


def test_a_digest_wins_over_the_tag() -> None:
    digest = "sha256:" + "ab" * 32

    def images(values: dict[str, Any]) -> set[str]:
        found = set()
        for obj in render(values):
            for container in (
                obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            ):
                if container["name"] != "pgbouncer":
                    found.add(container["image"])
        return found

    assert images({"image": {"repository": "r/userapi", "tag": "v1"}}) == {"r/userapi:v1"}
    tagged_and_pinned = {"image": {"repository": "r/userapi", "tag": "v1", "digest": digest}}
    assert images(tagged_and_pinned) == {f"r/userapi@{digest}"}
    for bad in ("latest", "sha256:abc", "ab" * 32):
        with pytest.raises(helm.HelmError, match="digest"):
            render({"image": {"digest": bad}})


EMULATOR = ("Deployment", "auth0-emulator")


def test_the_emulator_can_have_an_image_of_its_own() -> None:
    def emulator(values: dict[str, Any]) -> str:
        local = {"local": True, "localBackingServices": {"enabled": True, "auth0Emulator": True}}
        objects = render(deep_merge(local, values))
        obj = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == EMULATOR)
        return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])

    assert emulator({"image": {"repository": "r/userapi", "tag": "v1"}}) == "r/userapi:v1"
    own = {"localBackingServices": {"auth0EmulatorImage": "dev.local/userapi-emulator:x"}}
    assert emulator(own) == "dev.local/userapi-emulator:x"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"devSecrets": {"create": True}}, "devSecrets.create"),
        ({"localBackingServices": {"enabled": True}}, "localBackingServices.enabled"),
        ({"localBackingServices": {"auth0Emulator": True}}, "localBackingServices.auth0Emulator"),
        ({"devMode": True}, "devMode"),
    ],
)
def test_dev_only_switches_refuse_to_render_on_a_release_not_marked_local(
    values: dict[str, Any], named: str
) -> None:
    # A public events secret, a token-signing fake Auth0 or a writable root filesystem on a
    # production release: each was accepted before; now only `local: true` allows them.
    with pytest.raises(helm.HelmError, match=f"local-only settings .*{named}"):
        render(values)
    assert render({**values, "local": True})


@pytest.mark.parametrize("domain", ["http://example.us.auth0.com", "HTTP://tenant.auth0.com"])
def test_an_http_auth0_domain_needs_a_local_release(domain: str) -> None:
    # The app would post the client secret to /oauth/token and fetch the JWKS in cleartext.
    with pytest.raises(helm.HelmError, match="auth0/domain"):
        render({"auth0": {"domain": domain}})
    local = render({"local": True, "auth0": {"domain": domain}})
    config = next(o for o in local if o["metadata"]["name"] == "demo-config")
    assert config["data"]["AUTH0_ALLOW_INSECURE_HTTP"] == "true"
    for ok in ("example.us.auth0.com", "https://login.example.com"):
        config = next(o for o in render({"auth0": {"domain": ok}}) if o["kind"] == "ConfigMap")
        assert "AUTH0_ALLOW_INSECURE_HTTP" not in config["data"]


def test_the_pgbouncer_sidecar_can_be_pinned_by_digest() -> None:
    digest = "sha256:" + "cd" * 32

    def sidecars(values: dict[str, Any]) -> set[str]:
        return {
            c["image"]
            for s in knative_services(render(values)).values()
            for c in s["spec"]["template"]["spec"]["containers"]
            if c["name"] == "pgbouncer"
        }

    assert sidecars({}) == {"edoburu/pgbouncer:v1.24.1-p1"}
    assert sidecars({"pgbouncer": {"digest": digest}}) == {f"edoburu/pgbouncer@{digest}"}
    mirror = {"image": "registry.example.com:5000/mirror/pgbouncer:1.24", "digest": digest}
    assert sidecars({"pgbouncer": mirror}) == {
        f"registry.example.com:5000/mirror/pgbouncer@{digest}"
    }
    pinned = {"image": f"edoburu/pgbouncer@sha256:{'ef' * 32}", "digest": digest}
    assert sidecars({"pgbouncer": pinned}) == {f"edoburu/pgbouncer@{digest}"}
    with pytest.raises(helm.HelmError, match="digest"):
        render({"pgbouncer": {"digest": "latest"}})


def _app_env(service: dict[str, Any]) -> dict[str, str]:
    app = service["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in app.get("env", [])}


def test_client_quotas_are_off_by_default_and_set_per_endpoint() -> None:
    default = knative_services(render())
    assert all("CLIENT_QUOTA_REQUESTS" not in _app_env(s) for s in default.values())
    values = {
        "endpointDefaults": {"clientQuota": {"requests": 100, "windowSeconds": 30}},
        "endpoints": {
            "listUsers": {"clientQuota": {"requests": 10}},
            "auth0Events": {"clientQuota": {"requests": 0}},
        },
    }
    services = knative_services(render(values))
    get_user, list_users = _app_env(services["get-user"]), _app_env(services["list-users"])
    assert (get_user["CLIENT_QUOTA_REQUESTS"], get_user["CLIENT_QUOTA_WINDOW_SECONDS"]) == (
        "100",
        "30",
    )
    assert (list_users["CLIENT_QUOTA_REQUESTS"], list_users["CLIENT_QUOTA_WINDOW_SECONDS"]) == (
        "10",
        "30",
    )
    # An endpoint's own 0 turns off what the defaults turn on.
    assert "CLIENT_QUOTA_REQUESTS" not in _app_env(services["auth0-events"])
