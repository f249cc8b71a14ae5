"""Knative's own schema (@kubernetes-models/knative, generated from its Go types), run by node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

VALIDATOR = Path(__file__).resolve().parents[1] / "deploy" / "knative-schema"


def schema_errors(objects: list[dict[str, Any]], kind: str = "Service") -> dict[str, str]:
    """{index: error} for each of `objects` (all of `kind`: a Knative Service, or a
    PrometheusRule) that the models generated from the project's Go types reject."""
    node = shutil.which("node")
    assert node, "node is needed (apt-get install nodejs); scripts/bootstrap installs it"
    assert (VALIDATOR / "node_modules").exists(), (
        "run `make install` (npm ci in tests/deploy/knative-schema)"
    )
    result = subprocess.run(
        [node, str(VALIDATOR / "validate.mjs"), kind],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=VALIDATOR,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]
