"""How the reference server's modules import: ``comms`` only among taskvisor's packages
(docs/design.md), and never in a cycle among themselves (a module then sees another half-built)."""

from __future__ import annotations

import ast
from pathlib import Path

import apiserver

FORBIDDEN = {"supervisor", "sdk"}


def test_apiserver_never_imports_supervisor_or_sdk() -> None:
    root = Path(apiserver.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def _module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def apiserver_import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` -> the package's modules it imports, anywhere in
    its source (imports inside functions too: a lazy import closes a cycle all the same)."""
    modules = {_module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # ``from package import module`` imports the module, not just the package.
                targets.update(f"{base}.{alias.name}" for alias in node.names)
                targets.add(base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as the modules along it, first repeated at the end; [] if none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        path.append(module)
        for imported in sorted(graph[module]):
            if cycle := visit(imported):
                return cycle
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        if cycle := visit(module):
            return cycle
    return []


def test_import_cycle_finds_a_cycle_made_by_a_lazy_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("def main():\n    from pkg.demo import run\n")
    (package / "demo.py").write_text("from . import testing\n")
    (package / "testing.py").write_text("from pkg.cli import listen\n")
    assert import_cycle(apiserver_import_graph(package)) == [
        "pkg.cli",
        "pkg.demo",
        "pkg.testing",
        "pkg.cli",
    ]


def test_apiserver_modules_import_each_other_without_a_cycle() -> None:
    graph = apiserver_import_graph(Path(apiserver.__file__).parent)
    assert "apiserver.routes.connections" in graph  # the walk found the subpackage
    assert import_cycle(graph) == []
