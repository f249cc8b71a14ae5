"""Cold start is part of the product: serving one endpoint imports only what it uses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import userapi
from userapi.endpoints import ENDPOINTS

from tests.support.imports import imported_after


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_an_endpoint_imports_no_other_endpoint_and_no_tooling(endpoint: str) -> None:
    modules = imported_after(
        f"import userapi.commands.cli; from userapi import endpoints; endpoints.load({endpoint!r})"
    )
    others = {module for name, module in ENDPOINTS.items() if name != endpoint}
    assert modules & others == set()
    forbidden = {
        "userapi.emulator",
        "userapi.commands.dev",
        "userapi.commands.cluster_status",
        "kubernetes",
        "starlette.testclient",
    }
    leaked = {m for m in modules for f in forbidden if m == f or m.startswith(f + ".")}
    assert leaked == set()


def test_drivers_load_on_first_use_not_at_import() -> None:
    # redis and asyncpg are needed only once a request reaches them (or the lifespan starts).
    modules = imported_after("import userapi.endpoints.get_user")
    assert "asyncpg" not in modules
    assert "redis" not in modules


def test_the_clients_and_their_errors_import_no_web_framework() -> None:
    # They raise platform/errors.py's exceptions; only web/error_rendering.py renders them.
    modules = imported_after(
        "import userapi.platform.errors, userapi.adapters.auth0_management,"
        " userapi.adapters.access_tokens,"
        " userapi.adapters.database, userapi.domain.profile_cache, userapi.domain.idempotency"
    )
    assert {m for m in modules if m.split(".")[0] in ("fastapi", "starlette")} == set()


def _module_imports() -> dict[str, set[str]]:
    """Each userapi module's imports of other userapi modules, at the top or deferred into a
    function (a deferred import that only avoids a cycle at import is still a cycle), but not
    those under TYPE_CHECKING, which are for the type checker alone."""
    package = Path(userapi.__file__).parent
    sources: dict[str, ast.Module] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = ast.parse(path.read_text(encoding="utf-8"))
    graph: dict[str, set[str]] = {}
    for name, tree in sources.items():
        imported: set[str] = set()
        type_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    # `from package import submodule` needs the submodule, not the package's
                    # other exports.
                    submodule = f"{node.module}.{alias.name}"
                    imported.add(submodule if submodule in sources else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {m for m in imported if m in sources and m != name}
    return graph


def test_userapi_modules_import_each_other_one_way() -> None:
    graph = _module_imports()
    assert "userapi.web.resources" in graph["userapi.web.dependencies"]  # the graph is real
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for imported in sorted(graph[name]):
            if imported in path:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
    assert cycles == []


# The package's layers, lowest first: a module may import its own layer and those below it.
# The emulator is tooling beside them (the Auth0 stand-in): it may use the floor, and no layer
# may use it.
LAYERS = ("platform", "adapters", "domain", "web", "endpoints", "commands")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def test_layers_import_only_downwards() -> None:
    graph = _module_imports()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    # Every module of the package sits in a layer (or the emulator, or the version module).
    assert {_layer(m) for m in graph} == {*LAYERS, "emulator", "migrations", "root"}
    upward = []
    for module, imported in graph.items():
        layer = _layer(module)
        for target in imported:
            target_layer = _layer(target)
            if target_layer == "root":
                continue  # userapi/__init__.py: only __version__
            if layer == "emulator":
                allowed = target_layer in ("emulator", "platform")
            elif target_layer == "emulator":
                allowed = module == "userapi.commands.dev" or module == "userapi.commands.cli"
            else:
                allowed = rank[target_layer] <= rank[layer]
            if not allowed:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_an_endpoint_module_imports_no_other() -> None:
    # The registry (the package's __init__) names them as strings, so serving one imports one.
    graph = _module_imports()
    modules = set(ENDPOINTS.values())
    assert {f"userapi.endpoints.{m.rsplit('.', 1)[1]}" for m in modules} == modules
    shared = {(module, target) for module in modules for target in graph[module] & modules}
    assert shared == set()
    assert graph["userapi.endpoints"] & modules == set()
