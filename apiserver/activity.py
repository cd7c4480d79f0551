"""Activity files: what an executor hands ``supervise`` for one task try (docs/design.md).

Only the documented fields are ever written, and a document is checked with the validator
``supervise`` itself runs (:func:`comms.activity.parse_activity`) before the file is written
or its task instance queued: what ``supervise`` would refuse is refused here instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from comms.activity import parse_activity

__all__ = ["activity_document", "writing_activity_file"]


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
    """An activity (``supervise`` input) with only the fields docs/design.md defines.

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


@contextlib.contextmanager
def writing_activity_file(
    path: str | Path, doc: Mapping[str, Any], *, check: bool = True
) -> Iterator[None]:
    """Write ``doc`` to ``path`` (owner-only: it holds a token) if the ``with`` block succeeds.

    With ``check``, ``doc`` is first refused exactly as ``supervise`` would refuse it
    (:class:`comms.activity.ActivityError`). The file is written beside ``path`` before the
    block runs, so an unwritable ``path`` fails before the caller queues anything, and moved
    into place only after it: a failed block leaves no file, and no reader sees half of one.
    """
    data = (json.dumps(doc, indent=2) + "\n").encode()
    if check:
        parse_activity(data)
    target = Path(path)
    fd, staged = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as file:  # mkstemp made it 0600
            file.write(data)
        yield
        os.replace(staged, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise
