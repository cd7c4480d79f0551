"""Activity files: what an executor hands ``supervise`` for one task try (DESIGN.md).

Only the documented fields are ever written: the supervisor rejects unknown ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["activity_document", "write_activity_file"]


def activity_document(
    *,
    token: str,
    server: str,
    ti: Mapping[str, Any],
    entrypoint: str | None = None,
    command: Sequence[str] | None = None,
    context: Mapping[str, Any] | None = None,
    log_path: str | Path | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    run_as: str | None = None,
) -> dict[str, Any]:
    """An activity (``supervise`` input) with only the fields DESIGN.md defines.

    Exactly one of ``entrypoint`` and ``command`` must be given; optional fields left as None
    are omitted (the supervisor rejects unknown fields, so nothing else is ever written).
    """
    if (entrypoint is None) == (command is None):
        raise ValueError("give exactly one of entrypoint and command")
    doc: dict[str, Any] = {"kind": "ExecuteTask", "token": token, "server": server, "ti": dict(ti)}
    if entrypoint is not None:
        doc["entrypoint"] = entrypoint
    if command is not None:
        doc["command"] = list(command)
    optional = {
        "context": None if context is None else dict(context),
        "log_path": None if log_path is None else str(log_path),
        "timeout": timeout,
        "env": None if env is None else dict(env),
        "run_as": run_as,
    }
    doc.update({name: value for name, value in optional.items() if value is not None})
    return doc


def write_activity_file(path: str | Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as JSON to ``path``, readable by its owner only (it holds a token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as file:
        file.write(json.dumps(doc, indent=2) + "\n")
