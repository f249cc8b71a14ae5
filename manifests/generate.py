"""Render manifests/ from helm/userapi: the chart is the one source of truth.

    python manifests/generate.py          # rewrite the generated files (make manifests)
    python manifests/generate.py --check  # exit 1 if they differ from the chart (a test runs it)

base/ gets one file per endpoint plus common.yaml. Each overlay's generated-patches.yaml holds
the ConfigMaps, ServiceAccount and migration Job rendered with its values.yaml, and the Knative
Services its values change (a Redis URL from a Secret), patched over base: an overlay builds
into what the chart renders with its values (a test checks it).
local-backing/ is the chart's localBackingServices and devSecrets, for overlays/local (kind).
A cloud overlay that sets `api.host` also gets generated-api-route.yaml (its Gateway and the
one-host HTTPRoute, in its resources) and generated-reference-grant.yaml: the grant lives in
Knative's ingress namespace, which the kustomization's `namespace:` would override, so it is
applied on its own (docs/deploying.md).
helm/userapi/api-routes.yaml is the route table of that HTTPRoute, from the endpoint registry
(userapi.commands.openapi.route_table, the source of docs/openapi.json too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent
CHART = ROOT.parent / "helm" / "userapi"
OVERLAYS = ("local", "gke", "eks", "aks")
LOCAL_BACKING_KINDS = {"Secret", "Deployment", "Service", "NetworkPolicy"}
HEADER = "# Generated from helm/userapi by `make manifests`. Do not edit: change the chart.\n"
ROUTES = CHART / "api-routes.yaml"
ROUTES_HEADER = (
    "# Generated from the endpoint registry (services/userapi/endpoints) by `make manifests`.\n"
    "# Do not edit: which endpoint serves each method and path, and the Gateway API match that\n"
    "# selects it on the one API host (templates/api-route.yaml).\n"
)
# Gateway API objects an overlay adds to base (the one API host), and the one it cannot hold.
ROUTE_KINDS = ("Gateway", "HTTPRoute")
GRANT_KIND = "ReferenceGrant"


def render_chart(
    values: dict[str, Any], *, name: str = "userapi", is_install: bool | None = None
) -> list[dict[str, Any]]:
    """The chart's objects for `values`, as release `name` in namespace userapi."""
    rendered = helm.Chart.load(CHART).render(
        values, name=name, namespace="userapi", is_install=is_install
    )
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def _dump(objects: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def _values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def _is_knative_service(obj: dict[str, Any]) -> bool:
    return obj["kind"] == "Service" and str(obj["apiVersion"]).startswith("serving.knative.dev")


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _patch(base: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """`wanted` as a patch over `base`: a key only `base` has is set to null, which deletes it
    (in strategic merge and JSON merge patches alike); lists are taken whole."""
    patch = dict(wanted)
    for key, value in base.items():
        if key not in wanted:
            patch[key] = None
        elif isinstance(value, dict) and isinstance(wanted[key], dict):
            patch[key] = _patch(value, wanted[key])
    return patch


def overlay_values(overlay: str) -> dict[str, Any]:
    """The chart values an overlay stands for: base/values.yaml under its own values.yaml."""
    overlay_file = ROOT / "overlays" / overlay / "values.yaml"
    return deep_merge(_values(ROOT / "base" / "values.yaml"), _values(overlay_file))


def route_file() -> str:
    from userapi.commands.openapi import route_table

    return ROUTES_HEADER + yaml.safe_dump({"routes": route_table()}, sort_keys=False)


def generated_files() -> dict[Path, str]:
    """Every generated file; the chart renders with the route table on disk, so main() writes
    that first."""
    files: dict[Path, str] = {ROUTES: route_file()}
    objects = render_chart(_values(ROOT / "base" / "values.yaml"))
    by_key = {_key(obj): obj for obj in objects}
    common, resources = [], []
    for obj in objects:
        if _is_knative_service(obj):
            name = f"{obj['metadata']['name']}.yaml"
            files[ROOT / "base" / name] = _dump([obj])
            resources.append(name)
        elif obj["kind"] == "Job":
            files[ROOT / "base" / "migrate-job.yaml"] = _dump([obj])
        else:
            common.append(obj)
    files[ROOT / "base" / "common.yaml"] = _dump(common)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "userapi",
        "resources": ["common.yaml", "migrate-job.yaml", *sorted(resources)],
    }
    files[ROOT / "base" / "kustomization.yaml"] = HEADER + yaml.safe_dump(
        kustomization, sort_keys=False
    )
    local = overlay_values("local")
    local.update({"localBackingServices": {"enabled": True, "auth0Emulator": True},
                  "devSecrets": {"create": True}})  # fmt: skip
    # The endpoints' own NetworkPolicies are in base (the local overlay patches them).
    backing = [o for o in render_chart(local) if o["kind"] in LOCAL_BACKING_KINDS
               and not o["apiVersion"].startswith("serving.knative.dev")
               and _key(o) not in by_key]  # fmt: skip
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "userapi"}}
    files[ROOT / "local-backing" / "backing-services.yaml"] = _dump([namespace, *backing])
    for overlay in OVERLAYS:
        directory = ROOT / "overlays" / overlay
        rendered = render_chart(overlay_values(overlay))
        patches = [
            _patch(by_key[_key(o)], o)
            for o in rendered
            if o["kind"] in ("ConfigMap", "ServiceAccount", "Job")
            # Each cloud's own Redis, PostgreSQL and ingress addresses.
            or (o["kind"] == "NetworkPolicy" and _key(o) in by_key and o != by_key[_key(o)])
            # A custom resource's patch replaces its lists whole, so a Knative Service goes in
            # only when the overlay changes it, as the full object.
            or (_is_knative_service(o) and o != by_key[_key(o)])
        ]
        files[directory / "generated-patches.yaml"] = _dump(patches)
        routes = [o for o in rendered if o["kind"] in ROUTE_KINDS]
        grants = [o for o in rendered if o["kind"] == GRANT_KIND]
        for name, found in (("generated-api-route.yaml", routes),
                            ("generated-reference-grant.yaml", grants)):  # fmt: skip
            if found:
                files[directory / name] = _dump(found)
    return files


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = parser.parse_args()
    stale = []
    if not args.check and (not ROUTES.exists() or ROUTES.read_text() != route_file()):
        ROUTES.write_text(route_file())
    for path, text in generated_files().items():
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(path.relative_to(ROOT.parent))
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("stale (run `make manifests`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
