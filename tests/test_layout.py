"""The test tree's one rule: test modules share helpers through tests/support/ (or harness/),
never by importing one another, so a helper has one home and a test module one job."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another_test_module() -> None:
    test_modules = {
        ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)
        for path in TESTS.rglob("*.py")
        if path.name.startswith("test_") or path.name == "conftest.py"
    }
    assert "tests.unit.test_imports" in test_modules  # the walk found the tree
    crossings = {
        f"{path.relative_to(TESTS)} imports {name}"
        for path in TESTS.rglob("*.py")
        for name in _imported_modules(path) & test_modules
    }
    assert crossings == set()


def test_helpers_outside_support_are_conftest_fixtures_or_packages() -> None:
    # A module under tests/ that is neither a test, a conftest, a package marker nor in
    # support/ is a helper that lost its home.
    strays = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if not path.name.startswith("test_")
        and path.name not in ("conftest.py", "__init__.py")
        and "support" not in path.relative_to(TESTS).parts
        and "node_modules" not in path.parts
    ]
    assert strays == []
