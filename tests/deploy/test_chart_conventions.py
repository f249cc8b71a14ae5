"""The chart's standard knobs (grafana/helm-charts style): global values every pod gets,
per-endpoint overrides, per-endpoint facts as values, and a `# --` comment on every value, from
which docs/configuration.md's values table is generated."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from userapi import endpoints

from manifests import values_docs
from tests.support import knative_rules
from tests.support.chart import (
    CHART,
    GLOBAL,
    KUBERNETES_VERSION,
    OVERRIDE,
    TOLERATION,
    every_knob,
    knative_services,
    render,
)
from tests.support.knative_schema import schema_errors

EXPECTED_OVERRIDE = {
    "podAnnotations": {"example.com/team": "identity", "example.com/owner": "get-user"},
    "podLabels": {"example.com/tier": "edge"},
    "nodeSelector": {"pool": "api", "zone": "a"},
}
# Knative admits these revision fields only behind a config-features flag.
FLAGGED = ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints")


def _pod(service: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Knative Service's revision template: (metadata, spec)."""
    template = service["spec"]["template"]
    return template["metadata"], template["spec"]


def _knobs(metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Where each knob lands in a pod: its rendered value, or None when absent."""
    app = spec["containers"][0]
    env = [e for e in app["env"] if e["name"] in {"HTTPS_PROXY", "LOG_LEVEL"}]
    return {
        "podAnnotations": {
            k: v for k, v in metadata.get("annotations", {}).items() if k.startswith("example.com")
        },
        "podLabels": {
            k: v for k, v in metadata.get("labels", {}).items() if k.startswith("example.com")
        },
        "nodeSelector": spec.get("nodeSelector"),
        "tolerations": spec.get("tolerations"),
        "affinity": spec.get("affinity"),
        "topologySpreadConstraints": spec.get("topologySpreadConstraints"),
        "extraEnv": env or None,
        "extraEnvFrom": app.get("envFrom", [])[1:] or None,
        "imagePullSecrets": spec.get("imagePullSecrets"),
    }


def _job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Job")


def test_every_global_knob_reaches_every_endpoint_and_the_migration_job() -> None:
    objects = render(copy.deepcopy(GLOBAL))
    services = knative_services(objects)
    assert len(services) == 6
    for name, service in services.items():
        assert _knobs(*_pod(service)) == GLOBAL, name
        # Not PgBouncer's: the extra environment is the app's.
        sidecar = _pod(service)[1]["containers"][1]
        assert {e["name"] for e in sidecar["env"]} == {"DATABASE_USER", "DATABASE_PASSWORD"}
        assert len(sidecar.get("envFrom", [])) == 0
    template = _job(objects)["spec"]["template"]
    job = _knobs(template["metadata"], template["spec"])
    # A one-pod Job needs no spreading, and its environment is the chart's alone.
    assert job == {**GLOBAL, "topologySpreadConstraints": None, "extraEnv": None,
                   "extraEnvFrom": None}  # fmt: skip


def test_an_endpoint_overrides_each_knob_for_itself_alone() -> None:
    values = {**copy.deepcopy(GLOBAL), "endpoints": {"getUser": copy.deepcopy(OVERRIDE)}}
    objects = render(values)
    services = knative_services(objects)
    metadata, spec = _pod(services["get-user"])
    got = _knobs(metadata, spec)
    for knob in GLOBAL:
        wanted = EXPECTED_OVERRIDE.get(knob, OVERRIDE[knob])
        # An empty list clears the global one: the field is then not rendered at all.
        assert got[knob] == (wanted or None), knob
    assert spec["serviceAccountName"] == "get-user-identity"
    for name, service in services.items():
        if name != "get-user":
            assert _knobs(*_pod(service)) == GLOBAL, name
            assert _pod(service)[1]["serviceAccountName"] == "demo"
    template = _job(objects)["spec"]["template"]
    assert _knobs(template["metadata"], template["spec"])["tolerations"] == [TOLERATION]


def test_the_knobs_in_endpoint_defaults_apply_to_every_endpoint_but_not_the_job() -> None:
    objects = render({"endpointDefaults": {"nodeSelector": {"pool": "api"}}})
    for service in knative_services(objects).values():
        assert _pod(service)[1]["nodeSelector"] == {"pool": "api"}
    assert "nodeSelector" not in _job(objects)["spec"]["template"]["spec"]


def test_by_default_no_field_needs_a_knative_feature_flag() -> None:
    """A cluster with config-features untouched accepts the default chart."""
    objects = render()
    for service in knative_services(objects).values():
        metadata, spec = _pod(service)
        assert not set(FLAGGED) & set(spec)
        assert "imagePullSecrets" not in spec
        assert not [k for k in metadata["annotations"] if not k.startswith("autoscaling.")]
    assert not set(FLAGGED) & set(_job(objects)["spec"]["template"]["spec"])


def test_the_chart_owned_labels_and_annotations_win() -> None:
    spec = knative_services(
        render(
            {
                "podLabels": {"app.kubernetes.io/component": "other"},
                "endpoints": {"getUser": {"maxScale": 4}},
            }
        )
    )["get-user"]["spec"]["template"]
    assert spec["metadata"]["labels"]["app.kubernetes.io/component"] == "get-user"
    assert spec["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "4"


@pytest.mark.parametrize(
    "values",
    [
        {"podAnnotations": {"autoscaling.knative.dev/max-scale": "100"}},
        {"endpoints": {"getUser": {"podAnnotations": {"autoscaling.knative.dev/min-scale": "1"}}}},
        {"extraEnv": [{"name": "PORT", "value": "9000"}]},
        {"endpoints": {"getUser": {"extraEnv": [{"name": "K_SERVICE", "value": "x"}]}}},
        {"imagePullSecrets": ["regcred"]},
        {"topologySpreadConstraints": [{"maxSkew": 1}]},
        {"podLabels": {"tier": 1}},
        {"serviceAccount": {"annotation": {}}},
        {"endpoints": {"getUser": {"auth0SecretKey": "password"}}},
        {"fullnameOverride": "Not_A_Name"},
    ],
)
def test_the_values_schema_refuses_what_knative_or_kubernetes_would(
    values: dict[str, Any],
) -> None:
    with pytest.raises(helm.HelmError):
        render(values)


def _valid_everywhere(objects: list[dict[str, Any]]) -> None:
    services = list(knative_services(objects).values())
    for service in services:
        assert knative_rules.problems(service) == []
        # The revision spec, less Knative's own fields, is a Kubernetes PodSpec.
        metadata, spec = _pod(service)
        pod_spec = {
            k: v for k, v in spec.items() if k not in ("containerConcurrency", "timeoutSeconds")
        }
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **metadata},
               "spec": pod_spec}  # fmt: skip
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    for obj in objects:
        if not obj["apiVersion"].startswith("serving.knative.dev"):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert schema_errors(services) == {}


def test_every_knob_set_still_passes_the_kubernetes_and_knative_schemas() -> None:
    _valid_everywhere(render(every_knob()))


def test_the_service_account_carries_its_cloud_identity() -> None:
    annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/userapi"}
    objects = render({"serviceAccount": {"name": "userapi-sa", "annotations": annotations}})
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == "userapi-sa"
    assert account["metadata"]["annotations"] == annotations
    for service in knative_services(objects).values():
        assert _pod(service)[1]["serviceAccountName"] == "userapi-sa"
    # The chart's account does not exist yet when the pre-install hook runs.
    assert "serviceAccountName" not in _job(objects)["spec"]["template"]["spec"]


def test_an_account_of_your_own_is_used_by_the_migration_job_too() -> None:
    objects = render({"serviceAccount": {"create": False, "name": "platform-userapi"}})
    assert "ServiceAccount" not in {o["kind"] for o in objects}
    job = _job(objects)["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "platform-userapi"
    for service in knative_services(objects).values():
        assert _pod(service)[1]["serviceAccountName"] == "platform-userapi"


def test_name_overrides_rename_the_chart_objects_and_labels_not_the_knative_services() -> None:
    values = {
        "nameOverride": "accounts",
        "fullnameOverride": "accounts-prod",
        "local": True,
        "localBackingServices": {"enabled": True},
    }
    objects = render(values)
    named = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("ConfigMap", "accounts-prod-config"),
        ("ConfigMap", "accounts-prod-pgbouncer"),
        ("ServiceAccount", "accounts-prod"),
        ("Job", "accounts-prod-migrate"),
    } <= named
    services = knative_services(objects)
    assert set(services) == set(endpoints.ENDPOINTS)
    for service in services.values():
        metadata, spec = _pod(service)
        assert metadata["labels"]["app.kubernetes.io/name"] == "accounts"
        assert spec["serviceAccountName"] == "accounts-prod"
        assert spec["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "accounts-prod-config"
    # The NetworkPolicies still let userapi's pods in: they select the overridden name.
    backing = ("redis-from-userapi", "postgres-from-userapi")
    for policy in (o for o in objects if o["metadata"]["name"] in backing):
        (source,) = policy["spec"]["ingress"][0]["from"]
        assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "accounts"}


def test_which_auth0_secret_an_endpoint_mounts_is_a_value_matching_the_registry() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    default = values["endpointDefaults"]["auth0SecretKey"]
    for block in values["endpoints"].values():
        key = block.get("auth0SecretKey", default)
        calls_management_api = endpoints.load(block["name"]).management_api
        assert key == ("client-secret" if calls_management_api else "events-secret"), block
    # The templates follow the value, whatever the endpoint's name.
    spec = _pod(
        knative_services(render({"endpoints": {"getUser": {"auth0SecretKey": "events-secret"}}}))[
            "get-user"
        ]
    )[1]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "auth0"]
    assert volume["secret"]["items"] == [{"key": "events-secret", "path": "events-secret"}]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["AUTH0_EVENTS_SECRET_FILE"] == "/var/run/secrets/userapi/auth0/events-secret"
    assert "AUTH0_CLIENT_SECRET_FILE" not in env


def test_no_template_checks_an_endpoint_by_name() -> None:
    names = [block["name"] for block in yaml.safe_load((CHART / "values.yaml").read_text())[
        "endpoints"].values()]  # fmt: skip
    for template in (CHART / "templates").glob("*.yaml"):
        text = template.read_text()
        assert not [name for name in names if f'"{name}"' in text], template.name


# The values table -------------------------------------------------------------------------------


def test_every_value_has_a_helm_docs_comment() -> None:
    assert values_docs.undocumented(values_docs.VALUES.read_text()) == []


def test_the_values_table_in_the_docs_is_current() -> None:
    current = (values_docs.ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert values_docs.render(current) == current, "stale: run `make manifests`"


SAMPLE = """\
# -- The image.
image:
  # -- Its repository.
  repository: r/userapi
  # -- Its tag.
  # @default -- the appVersion
  tag: ""
# -- Requests and limits, one value.
resources:
  requests: {cpu: 10m}
# A plain comment documents nothing.
plain: 1
# -- Detached by the blank line below.

detached: true
"""


def test_the_comment_parser_pairs_keys_as_helm_docs_does() -> None:
    assert values_docs.undocumented(SAMPLE) == ["plain", "detached"]
    table = values_docs.table(SAMPLE).splitlines()
    assert table[2:6] == [
        "| `image` | object |  | The image. |",
        '| `image.repository` | string | `"r/userapi"` | Its repository. |',
        "| `image.tag` | string | the appVersion | Its tag. |",
        '| `resources` | object | `{"requests":{"cpu":"10m"}}` | Requests and limits, one value. |',
    ]
    # A section's keys are values of their own: one without a comment is reported.
    assert values_docs.undocumented(SAMPLE.replace("  # -- Its tag.\n", "")) == [
        "image.tag",
        "plain",
        "detached",
    ]
