"""Reporting a try's final state: to the server, or kept on disk when it cannot be.

A state the task's terminal message makes final (success, retry, deferral, rescheduling) is
sent the moment the message arrives, on a worker thread, so the server knows even if the task
then lingers; any other state once the supervisor decided the outcome. Either way
:meth:`StateReporter.deliver` returns only when the state reached the server, or was written
to ``<log_path>.state.json`` after the state retry budget was spent (exit code 4).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import uuid
from typing import Any

import msgspec

from comms.api import TIStateUpdate
from supervisor.client import ExecutionApiClient
from supervisor.masking import Masker
from supervisor.outcome import ExitCode, Outcome, Terminal, state_update
from supervisor.tasklog import TaskLog

__all__ = ["StateReporter"]


class StateReporter:
    """Sends one try's final state to the Execution API, once."""

    def __init__(
        self,
        client: ExecutionApiClient,
        ti_id: uuid.UUID,
        log: TaskLog,
        masker: Masker,
        *,
        budget: float,
        pool: concurrent.futures.Executor,
    ) -> None:
        self._client = client
        self._ti_id = ti_id
        self._log = log
        self._masker = masker
        self._budget = budget
        self._pool = pool
        self._early: concurrent.futures.Future[None] | None = None

    def report_now(self, terminal: Terminal) -> None:
        """Start reporting the state ``terminal`` makes final, without waiting for it."""
        self._early = self._pool.submit(self._send, terminal.update)

    def deliver(self, outcome: Outcome, terminal: Terminal | None) -> ExitCode:
        """Make sure ``outcome``'s state is reported; return the exit code that says so."""
        if outcome.state is None:
            return outcome.exit_code
        try:
            if self._early is not None:
                self._early.result()
            else:
                self._send(state_update(outcome.state, terminal, _now()))
        except Exception as exc:  # whatever went wrong, the state is kept on disk
            path = self._keep_on_disk(outcome, str(exc))
            self._log.supervisor(
                "error",
                "The final state could not be reported; kept on disk",
                state=outcome.state,
                path=path,
                error=str(exc),
            )
            return ExitCode.NOT_REPORTED
        return outcome.exit_code

    def _send(self, update: TIStateUpdate | dict[str, Any]) -> None:
        self._client.update_state(self._ti_id, update, budget=self._budget)

    def _keep_on_disk(self, outcome: Outcome, error: str) -> str:
        path = f"{self._log.path}.state.json"
        record = {
            "ti_id": str(self._ti_id),
            "state": outcome.state,
            "end_date": _now(),
            "reason": outcome.reason,
            "error": self._masker.mask(error),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(record) + b"\n")
        return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
