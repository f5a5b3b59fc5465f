"""The architecture, checked on the source (AST only: nothing under app/ is imported here).

Arrows: `api -> services -> (ml, market)`, `ml -> market`; `app.settings` parses markets;
`app.atomic` and `app.paths` are leaves any layer may use; `app.main` and `app/cli/` are the
composition roots and may import anything. Below `api` nothing imports FastAPI or Starlette,
so services, models and market code run (and are tested) without a web framework. Sizes:
a module of at most 400 lines, a function of at most 60 (complexity is ruff's C90).
Function-level imports count like the others: a lazy import is still a dependency.

The tests' own shape is checked too: shared helpers live in tests/helpers/, so no test
module imports another test module or a conftest, and none edits sys.path.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
TESTS = ROOT / "tests"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

LEAVES = ("app.atomic", "app.paths", "app.sqlite_file", "app.database", "app.pg")
ROOTS = ("app.main", "app.cli")
# a layer (a module and those under it) -> the app modules it may import (the same kind of
# prefixes). Every module under app/ belongs to exactly one layer.
ALLOWED: dict[str, tuple[str, ...]] = {
    "app": (),  # the package's own __init__ only
    "app.main": ("app",),
    "app.cli": ("app",),
    "app.api": ("app",),  # less the composition roots, see FORBIDDEN
    "app.services": ("app.services", "app.ml", "app.market", "app.settings", *LEAVES),
    "app.ml": ("app.ml", "app.market", *LEAVES),
    "app.market": ("app.market", *LEAVES),
    "app.settings": ("app.market", "app.cluster_settings", *LEAVES),
    "app.cluster_settings": LEAVES,
    "app.atomic": LEAVES,
    "app.paths": LEAVES,
    "app.sqlite_file": LEAVES,
    "app.database": LEAVES,
    "app.pg": LEAVES,
}
FORBIDDEN: dict[str, tuple[str, ...]] = {"app.api": ROOTS}
WEB_FREE = ("app.services", "app.ml", "app.market")
WEB_FRAMEWORKS = ("fastapi", "starlette")


@dataclass(frozen=True)
class Import:
    target: str  # the absolute module name, resolved as far as the files tell
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def is_module(name: str) -> bool:
    """Whether `name` is a module or package in this repository (for `from a import b`)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module of `from X import ...`, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(path: Path) -> Iterator[Import]:
    """Every import in the module, at any depth (functions, methods, conditionals)."""
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(node, importer, is_package)
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                yield Import(full if is_module(full) else base, node.lineno)


def layer_of(module: str) -> str:
    """The longest ALLOWED key that holds `module` (`app` itself holds only app/__init__.py)."""
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if within(module, layer) and (layer != "app" or module == "app"):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to ALLOWED in {__file__}")


def breaks_an_arrow(importer: str, target: str) -> bool:
    layer = layer_of(importer)
    allowed = any(within(target, a) for a in ALLOWED[layer])
    return not allowed or any(within(target, f) for f in FORBIDDEN.get(layer, ()))


def where(path: Path, line: int | None = None) -> str:
    rel = path.relative_to(ROOT)
    return f"{rel}:{line}" if line is not None else str(rel)


def test_imports_follow_the_arrows() -> None:
    wrong = []
    for path in app_modules():
        importer = module_name(path)
        layer = layer_of(importer)
        rule = ", ".join(ALLOWED[layer]) or "no app module"
        if layer in FORBIDDEN:
            rule += f" but {', '.join(FORBIDDEN[layer])}"
        wrong += [
            f"{where(path, imp.line)}: {importer} imports {imp.target}; {layer} may import only {rule}"
            for imp in imports(path)
            if within(imp.target, "app") and breaks_an_arrow(importer, imp.target)
        ]
    assert not wrong, "imports against the arrows:\n" + "\n".join(wrong)


def test_nothing_below_the_api_imports_a_web_framework() -> None:
    wrong = [
        f"{where(path, imp.line)}: {module_name(path)} imports {imp.target}; "
        f"{', '.join(WEB_FREE)} never import {' or '.join(WEB_FRAMEWORKS)}"
        for path in app_modules()
        if any(within(module_name(path), layer) for layer in WEB_FREE)
        for imp in imports(path)
        if any(within(imp.target, web) for web in WEB_FRAMEWORKS)
    ]
    assert not wrong, "web framework below the API:\n" + "\n".join(wrong)


def test_no_module_passes_400_lines() -> None:
    wrong = [
        f"{where(path)}: {n} lines; a module has at most {MAX_MODULE_LINES}"
        for path in app_modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not wrong, "modules too long:\n" + "\n".join(wrong)


def functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function with its qualified name (Class.method, outer.<locals>.inner)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def test_no_function_passes_60_lines() -> None:
    """Counted from the `def` line to the last line of the body, docstring included."""
    wrong = []
    for path in app_modules():
        for name, fn in functions(ast.parse(path.read_text(), str(path))):
            n = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if n > MAX_FUNCTION_LINES:
                wrong.append(
                    f"{where(path, fn.lineno)}: {module_name(path)}.{name} has {n} lines; "
                    f"a function has at most {MAX_FUNCTION_LINES}"
                )
    assert not wrong, "functions too long:\n" + "\n".join(wrong)


def suite_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


@pytest.mark.parametrize("path", suite_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_tests_share_helpers_only_through_tests_helpers(path: Path) -> None:
    test_names = {p.stem for p in suite_files() if p.name.startswith("test_") or p.name == "conftest.py"}
    wrong = []
    for imp in imports(path):
        last = imp.target.rsplit(".", 1)[-1]
        if (within(imp.target, "tests") and not within(imp.target, "tests.helpers")) or last in test_names:
            wrong.append(
                f"{where(path, imp.line)}: imports {imp.target}; shared helpers belong in tests/helpers/"
            )
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and getattr(node.value, "id", None) == "sys"
        ):
            wrong.append(f"{where(path, node.lineno)}: uses sys.path; import tests.helpers.* instead")
    assert not wrong, "\n".join(wrong)
