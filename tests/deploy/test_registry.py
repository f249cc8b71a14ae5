"""The endpoint registry (userapi.endpoints.ENDPOINTS) is the one list of endpoints: the chart's
values, what it renders, manifests/ and the README's API table must name the same ones.
docs/adding-an-endpoint.md lists every place a new endpoint touches; this test fails on any
that was missed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.routing import APIRoute
from userapi import endpoints
from userapi.endpoints import ENDPOINTS
from userapi.web.dependencies import principal_of

from tests.support.chart import CHART, knative_services, render

ROOT = Path(__file__).resolve().parents[2]


def camel_case(name: str) -> str:
    first, *rest = name.split("-")
    return first + "".join(part.title() for part in rest)


def test_the_chart_values_have_one_block_per_registered_endpoint() -> None:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    blocks = {key: block["name"] for key, block in values["endpoints"].items()}
    assert blocks == {camel_case(name): name for name in ENDPOINTS}
    assert all(block["enabled"] for block in values["endpoints"].values())


def test_the_chart_runs_each_registered_endpoint_in_its_own_service() -> None:
    services = knative_services(render())
    assert set(services) == set(ENDPOINTS)
    for name, service in services.items():
        app = service["spec"]["template"]["spec"]["containers"][0]
        assert app["args"] == [name]  # `userapi serve <name>`: the registry's key


def test_manifests_base_has_one_file_per_registered_endpoint() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    per_endpoint = set(kustomization["resources"]) - {"common.yaml", "migrate-job.yaml"}
    assert per_endpoint == {f"{name}.yaml" for name in ENDPOINTS}


def test_the_readme_api_table_lists_every_registered_endpoint_and_its_permission() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## The API", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    cells = [re.split(r"\s*\|\s*", row)[1:-1] for row in rows]
    assert [name for name, _route, _permission in cells] == list(ENDPOINTS)
    for name, _route, permission in cells:
        declared = endpoints.load(name).permission
        assert declared is None or f"`{declared}`" in permission, (name, permission)


def test_each_module_declares_the_endpoint_it_is_registered_as() -> None:
    for name in ENDPOINTS:
        declared = endpoints.load(name)
        assert declared.name == name
        assert declared.router.routes, name


def _calls(dependant: Any) -> list[Any]:
    return [dependant.call, *(c for sub in dependant.dependencies for c in _calls(sub))]


def test_every_route_takes_its_caller_from_its_endpoint_declaration() -> None:
    # The permission is stated once, in ENDPOINT; a route that authenticated some other way
    # would enforce something else, or nothing.
    for name in ENDPOINTS:
        endpoint = endpoints.load(name)
        for route in endpoint.router.routes:
            assert isinstance(route, APIRoute), (name, route)
            calls = _calls(route.dependant)
            if endpoint.permission is None:
                assert principal_of not in calls, (name, route.path)
            else:
                assert endpoint.authorize in calls, (name, route.path)
