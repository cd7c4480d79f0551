"""The import rules of docs/design.md, checked two ways: the source (AST) and a fresh
interpreter; and the runtime dependencies of pyproject.toml, each imported where it serves.

* ``comms`` imports none of ``sdk``, ``supervisor``, ``apiserver``;
* ``sdk`` never imports ``supervisor``, ``apiserver``, ``httpx`` or ``jwt``: the task child
  has no network client and no token code in it;
* ``supervisor`` never imports ``apiserver``, nor ``httpx``/``httpcore``: its HTTP is h11
  over sockets (``supervisor.http``), ~45 ms less start-up for every task try;
* Airflow's scheduler side (anything of ``airflow`` but its task SDK, ``airflow.sdk``) is
  imported by ``taskvisor_airflow/executor.py`` alone; the task child
  (``taskvisor_airflow.task_child``) never imports it nor the executor, and importing the
  package ``taskvisor_airflow`` loads neither (``TaskvisorExecutor`` is exported lazily).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "comms": {"sdk", "supervisor", "apiserver", "airflow", "taskvisor_airflow"},
    "sdk": {"supervisor", "apiserver", "httpx", "jwt", "airflow", "taskvisor_airflow"},
    "supervisor": {"apiserver", "httpx", "httpcore", "airflow"},
    # Runs in the task child or the executor: Airflow's side, never the supervisor's code.
    "taskvisor_airflow": {"supervisor", "apiserver", "sdk"},
}

#: Where ``supervisor`` may name ``taskvisor_airflow``: in the zygote, after the fork, to
#: become Airflow's task runner (as it imports ``sdk.runner`` to become ours).
AIRFLOW_ENTRY = {"supervisor/spawn.py"}


#: The one module that imports Airflow's scheduler side: the executor the scheduler loads.
SCHEDULER_SIDE_ENTRY = {"taskvisor_airflow/executor.py"}
#: Every package of the product, where the scheduler-side rule is checked.
PRODUCT_PACKAGES = ("comms", "sdk", "supervisor", "apiserver", "taskvisor_airflow")
TASK_CHILD = "taskvisor_airflow/task_child.py"


def imported_modules(path: Path) -> dict[str, int]:
    """Modules a source file imports (anywhere in it), by dotted name, with a line number.

    ``from a.b import c`` counts as importing ``a.b`` and ``a.b.c`` (``c`` may be a module).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module, node.lineno)
            for alias in node.names:
                found.setdefault(f"{node.module}.{alias.name}", node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.setdefault(node.args[0].value, node.lineno)
    return found


def imported_top_level_names(path: Path) -> dict[str, int]:
    """Top-level module names a source file imports (anywhere in it), with a line number."""
    found: dict[str, int] = {}
    for module, line in imported_modules(path).items():
        top = module.split(".")[0]
        found[top] = min(line, found.get(top, line))
    return found


def is_airflow_scheduler_side(module: str) -> bool:
    """Whether ``module`` is Airflow beyond its task SDK: executors, models, jobs, the
    api-server, its configuration, ... (``airflow.sdk`` is what a task runner imports)."""
    parts = module.split(".")
    return parts[0] == "airflow" and parts[1:2] != ["sdk"]


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


def test_only_the_zygote_names_the_package_that_imports_airflow():
    naming = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "supervisor").rglob("*.py")
        if "taskvisor_airflow" in imported_top_level_names(path)
    )
    assert set(naming) <= AIRFLOW_ENTRY, naming


def test_only_the_executor_imports_airflows_scheduler_side():
    importing = sorted(
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for package in PRODUCT_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if str(path.relative_to(ROOT)) not in SCHEDULER_SIDE_ENTRY
        for module, line in imported_modules(path).items()
        if is_airflow_scheduler_side(module)
    )
    assert not importing, "\n".join(importing)


def test_the_task_child_never_imports_the_executor_nor_airflows_scheduler_side():
    imported = imported_modules(ROOT / TASK_CHILD)
    forbidden = sorted(
        f"{TASK_CHILD}:{line} imports {module}"
        for module, line in imported.items()
        if is_airflow_scheduler_side(module)
        or module.startswith(("taskvisor_airflow.executor", "taskvisor_airflow.TaskvisorExecutor"))
    )
    assert not forbidden, "\n".join(forbidden)
    assert any(module.startswith("airflow.sdk") for module in imported)  # the scan sees it


def test_importing_the_package_and_its_task_child_loads_neither_the_executor_nor_airflow():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, taskvisor_airflow, taskvisor_airflow.task_child, "
            "taskvisor_airflow.supervise_processes; print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "taskvisor_airflow.task_child" in loaded
    assert "taskvisor_airflow.executor" not in loaded
    assert not [name for name in loaded if name.split(".")[0] == "airflow"]


def test_airflow_scheduler_side_is_everything_of_airflow_but_its_task_sdk():
    assert is_airflow_scheduler_side("airflow.executors.base_executor")
    assert is_airflow_scheduler_side("airflow.models")
    assert is_airflow_scheduler_side("airflow")
    assert not is_airflow_scheduler_side("airflow.sdk.execution_time.task_runner")
    assert not is_airflow_scheduler_side("airflow_sdk_lookalike")


def test_the_supervisor_loads_no_airflow_code_before_or_after_the_fork():
    loaded = modules_after_importing_all_of("supervisor")
    assert not [name for name in loaded if name.split(".")[0] in {"airflow", "taskvisor_airflow"}]


@pytest.mark.parametrize("package", sorted(set(FORBIDDEN) - {"taskvisor_airflow"}))
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
    assert set(imported_modules(source)) == {
        "os.path",
        "httpx",
        "httpx.Client",
        "jwt",
        "supervisor.client",
    }


# --- every runtime dependency serves the product --------------------------------------------

PRODUCT = ("comms", "sdk", "supervisor", "apiserver")


def _runtime_requirements() -> dict[str, str]:
    """Runtime dependencies of pyproject.toml: distribution name -> its requirement."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None, requirement
        names[_normalise(name.group())] = requirement
    return names


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _product_imports() -> dict[str, str]:
    """Distributions the product's source imports: normalised name -> a file:line using it."""
    by_module = importlib.metadata.packages_distributions()
    found = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, line in imported_top_level_names(path).items():
                for distribution in by_module.get(module, []):
                    found.setdefault(_normalise(distribution), f"{path.relative_to(ROOT)}:{line}")
    return found


def test_every_runtime_dependency_is_imported_by_the_product():
    used = _product_imports()
    unused = sorted(req for name, req in _runtime_requirements().items() if name not in used)
    assert not unused, f"runtime dependencies no product module imports: {unused}"


def test_every_third_party_module_the_product_imports_is_a_runtime_dependency():
    declared = _runtime_requirements()
    ours = {_normalise("taskvisor")}
    undeclared = sorted(
        f"{name} ({where})"
        for name, where in _product_imports().items()
        if name not in declared and name not in ours
    )
    assert not undeclared, f"imported but not declared: {undeclared}"


def test_every_runtime_dependency_has_a_bounded_range():
    for requirement in _runtime_requirements().values():
        assert ">=" in requirement, f"{requirement}: no tested lower bound"
        assert "<" in requirement.replace("<=", ""), f"{requirement}: no upper bound"
