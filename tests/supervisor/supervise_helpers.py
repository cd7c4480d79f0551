"""Helpers of the supervisor's end-to-end tests: run supervise, read its task log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = Path(__file__).with_name("e2e_tasks.py")

#: Fast timings for tests; each test may override.
FAST = {
    "TASKVISOR_HEARTBEAT_INTERVAL": "0.5",
    "TASKVISOR_KILL_GRACE": "1",
    "TASKVISOR_OVERTIME": "5",
    "TASKVISOR_API_RETRY_BUDGET": "3",
    "TASKVISOR_STATE_RETRY_BUDGET": "3",
}


@dataclass
class Run:
    """A finished supervise run."""

    exit_code: int
    stderr: str
    log_path: Path

    def records(self) -> list[dict[str, Any]]:
        """The task log, one dict per line."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def events(self, logger: str) -> list[str]:
        """The ``event`` of every record of ``logger``, in order."""
        return [r["event"] for r in self.records() if r["logger"] == logger]


def entrypoint(name: str) -> str:
    """``path/to/e2e_tasks.py:name``."""
    return f"{TASKS}:{name}"


def supervise(
    activity: Path | str, *, env: dict[str, str] | None = None, timeout: float = 60
) -> Run:
    """Run ``supervise`` as a real subprocess and wait for it."""
    doc = json.loads(Path(activity).read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", str(activity)],
        env={**os.environ, **FAST, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stderr, Path(doc["log_path"]))
