"""The suite's own layout: fixtures and hooks only in ``conftest.py``, shared builders in
``helpers.py`` (and the support modules), and no test module importing ``conftest`` or
another test module, so each file can be read, run and moved on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CONFTESTS = sorted(TESTS.rglob("conftest.py"))
TEST_MODULES = sorted(TESTS.rglob("test_*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or inside a function), by its dotted
    name; a relative import keeps its leading dots."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("path", [*TEST_MODULES, *CONFTESTS],
                         ids=lambda p: str(p.relative_to(TESTS)))
def test_no_module_imports_conftest_or_a_test_module(path: Path) -> None:
    wrong = sorted(
        name for name in imported_modules(path)
        if name.rsplit(".", 1)[-1] == "conftest"
        or name.rsplit(".", 1)[-1].startswith("test_")
    )
    assert wrong == [], f"{path.name} imports {wrong}: move what it needs to tests/helpers.py"


@pytest.mark.parametrize("path", CONFTESTS, ids=lambda p: str(p.relative_to(TESTS)))
def test_conftest_defines_only_fixtures_and_hooks(path: Path) -> None:
    """A public function or class in a conftest is a builder: it belongs in helpers.py.
    Private module-level helpers of the hooks are allowed."""
    builders = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            builders.append(node.name)
        elif isinstance(node, ast.FunctionDef):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            is_fixture = any(d.startswith(("pytest.fixture", "pytest.hookimpl"))
                             for d in decorators)
            if not (is_fixture or node.name.startswith(("pytest_", "_"))):
                builders.append(node.name)
    assert builders == [], f"{path.name} defines builders {builders}: move them to helpers.py"
