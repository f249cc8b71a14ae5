"""Cold start is part of the product: serving one endpoint imports only what it uses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from userapi.endpoints import ENDPOINTS


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_an_endpoint_imports_no_other_endpoint_and_no_tooling(endpoint: str) -> None:
    modules = imported_after(
        f"import userapi.cli; from userapi import endpoints; endpoints.load({endpoint!r})"
    )
    others = {module for name, module in ENDPOINTS.items() if name != endpoint}
    assert modules & others == set()
    forbidden = {
        "userapi.emulator",
        "userapi.dev",
        "userapi.cluster",
        "kubernetes",
        "starlette.testclient",
    }
    leaked = {m for m in modules for f in forbidden if m == f or m.startswith(f + ".")}
    assert leaked == set()


def test_drivers_load_on_first_use_not_at_import() -> None:
    # redis and asyncpg are needed only once a request reaches them (or the lifespan starts).
    modules = imported_after("import userapi.get_user")
    assert "asyncpg" not in modules
    assert "redis" not in modules
