"""Which rule of an HTTPRoute a request matches, by Gateway API's own precedence (the spec's
HTTPRouteRule documentation): an Exact path before any prefix, a longer prefix before a shorter,
then a rule with a method before one without; a PathPrefix matches whole path elements and
ignores a trailing slash. What the chart's route means on any conforming gateway. And the
CRD schemas its objects must pass."""

from __future__ import annotations

from typing import Any

import jsonschema

from harness.cluster import gateway_api

GROUP = "gateway.networking.k8s.io/"


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """What Gateway API's CRD schema (the pinned module's) says is wrong with `obj`; the CEL
    rules only an API server runs (tests/cluster/test_one_host.py does)."""
    schema = gateway_api.schemas()[(obj["apiVersion"], obj["kind"])]
    errors = jsonschema.Draft7Validator(schema).iter_errors(obj)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def _path_matches(match: dict[str, Any], path: str) -> bool:
    kind, value = str(match.get("type", "PathPrefix")), str(match.get("value", "/"))
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")
    raise ValueError(f"not a portable path match: {kind}")


def matching_rule(route: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The rule of `route` that serves `method` `path`, or None (the gateway's 404)."""
    candidates: list[tuple[tuple[bool, int, bool], dict[str, Any]]] = []
    for rule in route["spec"]["rules"]:
        for match in rule.get("matches") or [{}]:
            path_match = match.get("path", {"type": "PathPrefix", "value": "/"})
            if not _path_matches(path_match, path):
                continue
            if match.get("method") not in (None, method):
                continue
            exact = path_match.get("type") == "Exact"
            rank = (exact, len(path_match.get("value", "/")), match.get("method") is not None)
            candidates.append((rank, rule))
    if not candidates:
        return None
    return max(candidates, key=lambda found: found[0])[1]
