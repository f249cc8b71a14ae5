"""Render manifests/ from helm/userapi: the chart is the one source of truth.

    python manifests/generate.py          # rewrite the generated files (make manifests)
    python manifests/generate.py --check  # exit 1 if they differ from the chart (a test runs it)

base/ gets one file per endpoint plus common.yaml. Each overlay's generated-patches.yaml holds
the ConfigMaps, ServiceAccount and migration Job rendered with its values.yaml, patched over base.
local-backing/ is the chart's localBackingServices and devSecrets, for kind and skaffold dev.
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


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm.Chart.load(CHART).render(values, name="userapi", namespace="userapi")
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


def generated_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    objects = _render(_values(ROOT / "base" / "values.yaml"))
    common, resources = [], []
    for obj in objects:
        if obj["kind"] == "Service" and obj["apiVersion"].startswith("serving.knative.dev"):
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
    local = deep_merge(
        _values(ROOT / "base" / "values.yaml"), _values(ROOT / "overlays" / "local" / "values.yaml")
    )
    local.update({"localBackingServices": {"enabled": True, "auth0Emulator": True},
                  "devSecrets": {"create": True}})  # fmt: skip
    backing = [o for o in _render(local) if o["kind"] in LOCAL_BACKING_KINDS
               and not o["apiVersion"].startswith("serving.knative.dev")]  # fmt: skip
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "userapi"}}
    files[ROOT / "local-backing" / "backing-services.yaml"] = _dump([namespace, *backing])
    for overlay in OVERLAYS:
        directory = ROOT / "overlays" / overlay
        values = deep_merge(
            _values(ROOT / "base" / "values.yaml"), _values(directory / "values.yaml")
        )
        configs = [
            o for o in _render(values) if o["kind"] in ("ConfigMap", "ServiceAccount", "Job")
        ]
        files[directory / "generated-patches.yaml"] = _dump(configs)
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
