"""The import rules of DESIGN.md, checked two ways: the source (AST) and a fresh interpreter.

* ``comms`` imports none of ``sdk``, ``supervisor``, ``apiserver``;
* ``sdk`` never imports ``supervisor``, ``apiserver``, ``httpx`` or ``jwt``: the task child
  has no network client and no token code in it;
* ``supervisor`` never imports ``apiserver``, nor ``httpx``/``httpcore``: its HTTP is h11
  over sockets (``supervisor.http``), ~45 ms less start-up for every task try.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "comms": {"sdk", "supervisor", "apiserver"},
    "sdk": {"supervisor", "apiserver", "httpx", "jwt"},
    "supervisor": {"apiserver", "httpx", "httpcore"},
}


def imported_top_level_names(path: Path) -> dict[str, int]:
    """Top-level module names a source file imports (anywhere in it), with a line number."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module.split(".")[0], node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.setdefault(node.args[0].value.split(".")[0], node.lineno)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_source_never_imports_what_it_must_not(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no source found for {package}"
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for name, line in imported_top_level_names(path).items()
        if name in FORBIDDEN[package]
    ]
    assert not violations, "\n".join(violations)


IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if info.name.rsplit(".", 1)[-1] != "__main__":
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_importing_all_of(package: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, package],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_of_a_package_loads_nothing_forbidden(package):
    loaded = modules_after_importing_all_of(package)
    assert f"{package}" in loaded
    offending = sorted(name for name in loaded if name.split(".")[0] in FORBIDDEN[package])
    assert not offending, f"importing {package} loaded {offending}"


def test_the_ast_scan_sees_every_import_form(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "import os.path\n"
        "from httpx import Client\n"
        "from . import sibling\n"
        "def later():\n"
        "    import jwt\n"
        "    importlib.import_module('supervisor.client')\n"
    )
    assert set(imported_top_level_names(source)) == {"os", "httpx", "jwt", "supervisor"}
