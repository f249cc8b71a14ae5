"""One API host (the chart's `api.*`), and releases (each endpoint's `traffic`, `revisionSuffix`,
`rolloutDuration`), rendered by real Helm. The route is checked against the contract
(docs/openapi.json) by matching every operation the way Gateway API says a gateway must, and
against Gateway API's own CRD schemas at the version the test cluster's gateway runs
(harness/cluster/gateway_api.py); tests/cluster/test_one_host.py has a real gateway route it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from userapi.commands.openapi import merged_spec, route_table

from manifests.generate import ROUTES, overlay_values, render_chart
from tests.support import knative_rules
from tests.support.chart import OVERLAYS, build_overlay, knative_services, render
from tests.support.gateway import matching_rule, schema_problems

ROOT = Path(__file__).resolve().parents[2]
HOST = "api.example.com"
ONE_HOST = {"api": {"host": HOST, "parentRefs": [{"name": "shared", "namespace": "gateways"}]}}
SCHEMA_REFUSED = "values don't meet the specifications of the schema"


def operations() -> list[tuple[str, str, str]]:
    """(method, path, endpoint) of every operation of the committed OpenAPI document."""
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    return sorted(
        (method.upper(), path, operation["x-userapi-endpoint"])
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    )


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "auth0%7C64f1c2a9", path)


def kinds(objects: list[dict[str, Any]], *wanted: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in wanted]


def test_the_chart_route_table_is_the_registry_and_matches_the_openapi_document() -> None:
    committed = yaml.safe_load(ROUTES.read_text())["routes"]
    assert committed == route_table(), "helm/userapi/api-routes.yaml is stale: make manifests"
    assert sorted((r["method"], r["path"], r["endpoint"]) for r in committed) == operations()


def test_a_table_two_endpoints_would_share_a_match_in_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from userapi import endpoints

    # get-user's module declared again under delete-user's name: GET /users/ twice.
    monkeypatch.setitem(endpoints.ENDPOINTS, "twin", endpoints.ENDPOINTS["get-user"])
    monkeypatch.setattr(endpoints, "load", lambda name: _renamed(name))
    with pytest.raises(ValueError, match="GET PathPrefix /users/ would route to get-user and twin"):
        route_table()


def _renamed(name: str) -> Any:
    import importlib

    from userapi.endpoints import ENDPOINTS

    return importlib.import_module(ENDPOINTS[name]).ENDPOINT


def test_one_host_is_off_by_default() -> None:
    objects = render()
    assert kinds(objects, "Gateway", "HTTPRoute", "ReferenceGrant") == []
    config = next(o for o in objects if o["metadata"]["name"] == "demo-config")
    assert "API_HOST" not in config["data"]
    assert "servers" not in merged_spec()


def test_every_operation_routes_to_its_endpoint_through_knative_ingress() -> None:
    objects = render(ONE_HOST)
    (route,) = kinds(objects, "HTTPRoute")
    assert route["spec"]["hostnames"] == [HOST]
    assert route["spec"]["parentRefs"] == [{"name": "shared", "namespace": "gateways"}]
    for method, path, endpoint in operations():
        rule = matching_rule(route, method, concrete(path))
        assert rule is not None, (method, path)
        (rewrite,) = rule["filters"]
        # Knative's cluster-local gateway, which routes by Host to the endpoint's Service.
        assert rewrite["urlRewrite"]["hostname"] == f"{endpoint}.userapi.svc.cluster.local"
        assert rule["backendRefs"] == [
            {"name": "kourier-internal", "namespace": "kourier-system", "port": 80}
        ]
    # Exact wins over the prefix: GET /users is list-users, not get-user.
    rule = matching_rule(route, "GET", "/users")
    assert rule is not None
    assert rule["filters"][0]["urlRewrite"]["hostname"].startswith("list-users.")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/admin"), ("PUT", "/users"), ("PUT", "/users/x"),
     ("GET", "/events/auth0"), ("GET", "/healthz"), ("GET", "/openapi.json")],
)  # fmt: skip
def test_what_the_contract_does_not_have_matches_no_rule(method: str, path: str) -> None:
    (route,) = kinds(render(ONE_HOST), "HTTPRoute")
    assert matching_rule(route, method, path) is None


def test_a_disabled_endpoint_has_no_rule() -> None:
    (route,) = kinds(render({**ONE_HOST, "endpoints": {"deleteUser": {"enabled": False}}}),
                     "HTTPRoute")  # fmt: skip
    assert matching_rule(route, "DELETE", "/users/x") is None
    assert matching_rule(route, "GET", "/users/x") is not None


def test_the_openapi_document_names_the_one_host_as_its_server() -> None:
    assert merged_spec(HOST)["servers"] == [{"url": f"https://{HOST}"}]
    config = next(o for o in render(ONE_HOST) if o["metadata"]["name"] == "demo-config")
    assert config["data"]["API_HOST"] == HOST


def test_the_app_serves_its_document_with_the_one_host() -> None:
    from userapi.endpoints import build_app

    from tests.support.settings import make_settings

    # The document /openapi.json serves (with API_DOCS): no lifespan needed to build it.
    app = build_app("get-user", ["get-user"], make_settings(api_docs=True, api_host=HOST))
    assert app.openapi()["servers"] == [{"url": f"https://{HOST}"}]
    plain = build_app("get-user", ["get-user"], make_settings(api_docs=True))
    assert "servers" not in plain.openapi()


def test_the_ingress_and_its_domain_are_values() -> None:
    values = {"api": {"host": HOST, "parentRefs": [{"name": "g"}], "knativeIngress": {
        "name": "traefik", "namespace": "knative-serving", "port": 8080, "domain": "example.org"},
        "referenceGrant": {"create": False}}}  # fmt: skip
    objects = render(values)
    (route,) = kinds(objects, "HTTPRoute")
    rule = matching_rule(route, "GET", "/users/me")
    assert rule is not None
    assert rule["filters"][0]["urlRewrite"]["hostname"] == "get-user.userapi.example.org"
    assert rule["backendRefs"] == [
        {"name": "traefik", "namespace": "knative-serving", "port": 8080}
    ]
    assert kinds(objects, "ReferenceGrant") == []


def test_the_reference_grant_lets_only_this_namespace_reach_only_the_ingress() -> None:
    (grant,) = kinds(render(ONE_HOST), "ReferenceGrant")
    assert grant["metadata"]["namespace"] == "kourier-system"
    assert grant["spec"] == {
        "from": [
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "userapi"}
        ],
        "to": [{"group": "", "kind": "Service", "name": "kourier-internal"}],
    }


def test_a_route_needs_a_gateway() -> None:
    with pytest.raises(helm.HelmError, match=r"api\.host needs a Gateway"):
        render({"api": {"host": HOST}})
    with pytest.raises(helm.HelmError, match=r"api\.gateway\.className is required"):
        render({"api": {"host": HOST, "gateway": {"create": True}}})
    with pytest.raises(helm.HelmError, match=SCHEMA_REFUSED):
        render({"api": {"host": "https://api.example.com/"}})


def test_the_chart_own_gateway_comes_first_with_an_https_listener() -> None:
    objects = render({"api": {"host": HOST, "gateway": {"create": True, "className": "c"}}})
    (gateway,) = kinds(objects, "Gateway")
    (route,) = kinds(objects, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "demo"}]
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"], listener["hostname"]) == ("HTTPS", 443, HOST)
    assert listener["tls"]["certificateRefs"] == [{"name": "userapi-api-tls"}]


def _with_one_host(overlay: str) -> dict[str, Any]:
    values = overlay_values(overlay)
    if not values.get("api", {}).get("host"):  # local: a shared Gateway of the developer's
        values["api"] = copy.deepcopy(ONE_HOST["api"])
    return values


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_route_passes_gateway_api_crd_schemas(overlay: str) -> None:
    objects = kinds(render_chart(_with_one_host(overlay)), "Gateway", "HTTPRoute",
                    "ReferenceGrant")  # fmt: skip
    assert {o["kind"] for o in objects} >= {"HTTPRoute", "ReferenceGrant"}
    for obj in objects:
        assert schema_problems(obj) == [], (obj["kind"], schema_problems(obj))


def test_a_broken_route_fails_the_crd_schema() -> None:
    (route,) = kinds(render(ONE_HOST), "HTTPRoute")
    broken = copy.deepcopy(route)
    broken["spec"]["rules"][0]["matches"][0]["method"] = "FETCH"
    broken["spec"]["rules"][0]["filters"][0]["type"] = "Rewrite"
    problems = schema_problems(broken)
    assert any("FETCH" in p for p in problems), problems
    assert any("Rewrite" in p for p in problems), problems


# Each cloud's Gateway: its class, and what the cloud reads from it.
CLOUDS = {
    "gke": ("gke-l7-global-external-managed", {}),
    "eks": ("aws-alb", {}),
    "aks": ("azure-alb-external", {"alb.networking.azure.io/alb-namespace": "alb",
                                   "alb.networking.azure.io/alb-name": "userapi-alb"}),
}  # fmt: skip


@pytest.mark.parametrize("overlay", sorted(CLOUDS))
def test_each_cloud_overlay_builds_its_gateway_and_the_one_host_route(overlay: str) -> None:
    built = build_overlay(overlay)
    (gateway,) = kinds(built, "Gateway")
    (route,) = kinds(built, "HTTPRoute")
    assert kinds(built, "ReferenceGrant") == []  # applied on its own, in the ingress namespace
    class_name, annotations = CLOUDS[overlay]
    assert gateway["spec"]["gatewayClassName"] == class_name
    assert gateway["metadata"].get("annotations", {}) == annotations
    assert route["spec"]["parentRefs"] == [{"name": "userapi"}]
    assert route["metadata"]["namespace"] == gateway["metadata"]["namespace"] == "userapi"
    assert [listener["hostname"] for listener in gateway["spec"]["listeners"]] == [HOST]
    for method, path, endpoint in operations():
        rule = matching_rule(route, method, concrete(path))
        assert rule is not None
        assert rule["filters"][0]["urlRewrite"]["hostname"].startswith(f"{endpoint}.userapi.")
    grants = yaml.safe_load_all(
        (ROOT / "manifests" / "overlays" / overlay / "generated-reference-grant.yaml").read_text()
    )
    assert [g["metadata"]["namespace"] for g in grants if g] == ["kourier-system"]


# --- releases: traffic, tags, revision names, gradual rollout ---

CANARY = [
    {"revisionName": "get-user-v1", "percent": 90, "tag": "current"},
    {"latestRevision": True, "percent": 10, "tag": "candidate"},
]


def test_a_canary_renders_into_the_knative_service() -> None:
    values = {"endpoints": {"getUser": {"traffic": CANARY, "revisionSuffix": "v2",
                                        "rolloutDuration": "300s"}}}  # fmt: skip
    services = knative_services(render(values))
    service = services["get-user"]
    assert service["spec"]["traffic"] == CANARY
    assert service["spec"]["template"]["metadata"]["name"] == "get-user-v2"
    assert service["metadata"]["annotations"] == {"serving.knative.dev/rollout-duration": "300s"}
    assert knative_rules.problems(service) == []
    # The other endpoints keep Knative's default: every request to the latest revision.
    for name, other in services.items():
        if name != "get-user":
            assert "traffic" not in other["spec"], name
            assert "annotations" not in other["metadata"], name
            assert "name" not in other["spec"]["template"]["metadata"], name


@pytest.mark.parametrize(
    ("traffic", "total"),
    [([{"latestRevision": True, "percent": 90}], 90),
     ([{"revisionName": "get-user-00001", "percent": 60},
       {"latestRevision": True, "percent": 60}], 120),
     ([{"revisionName": "get-user-00001", "tag": "old"}], 0)],
)  # fmt: skip
def test_splits_that_do_not_add_up_to_100_refuse_to_render(
    traffic: list[dict[str, Any]], total: int
) -> None:
    with pytest.raises(helm.HelmError) as refused:
        render({"endpoints": {"listUsers": {"traffic": traffic}}})
    message = str(refused.value)
    assert SCHEMA_REFUSED not in message  # the shapes are fine: the sum is the templates' check
    assert f"endpoints.listUsers.traffic: the percents add up to {total}, not 100" in message


def test_a_tag_only_target_with_percent_0_is_fine() -> None:
    traffic = [{"latestRevision": True, "percent": 100},
               {"revisionName": "get-user-00001", "percent": 0, "tag": "previous"}]  # fmt: skip
    service = knative_services(render({"endpoints": {"getUser": {"traffic": traffic}}}))["get-user"]
    assert service["spec"]["traffic"] == traffic


@pytest.mark.parametrize(
    "target",
    [{"percent": 100},  # neither a revision nor the latest
     {"revisionName": "get-user-00001", "latestRevision": True, "percent": 100},  # both
     {"latestRevision": False, "percent": 100},
     {"revisionName": "Get_User", "percent": 100},
     {"latestRevision": True, "percent": 101},
     {"latestRevision": True, "percent": -1},
     {"latestRevision": True, "percent": "100"},
     {"latestRevision": True, "percent": 100, "tag": "Canary!"},
     {"latestRevision": True, "percent": 100, "weight": 1}],
)  # fmt: skip
def test_the_schema_refuses_malformed_traffic_targets(target: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match=SCHEMA_REFUSED):
        render({"endpoints": {"getUser": {"traffic": [target]}}})


@pytest.mark.parametrize(
    "values",
    [{"rolloutDuration": "5 minutes"}, {"rolloutDuration": 300}, {"revisionSuffix": "V2"},
     {"revisionSuffix": "-v2"}],
)  # fmt: skip
def test_the_schema_refuses_malformed_rollout_and_revision_names(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match=SCHEMA_REFUSED):
        render({"endpoints": {"getUser": values}})
