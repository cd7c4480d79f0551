"""The reference server depends on ``comms`` only among taskvisor's packages (DESIGN.md)."""

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
