"""``TaskvisorExecutor``: Airflow's scheduler runs every task try through ``supervise``.

One line of Airflow configuration::

    [core]
    executor = taskvisor_airflow.TaskvisorExecutor

(or ``AIRFLOW__CORE__EXECUTOR=taskvisor_airflow.TaskvisorExecutor``), and Airflow 3.3's
scheduler hands each ``ExecuteTask`` workload to a fresh ``supervise -`` on this machine,
with LocalExecutor's semantics:

- at most ``[core] parallelism`` tries run at once; the rest wait in ``queued_tasks``,
  highest ``priority_weight`` first (Airflow's own ordering);
- each try's events reach the scheduler: running when its ``supervise`` started, then
  success (exit 0: success, skipped, deferred or up_for_reschedule, already reported by
  ``supervise``) or failed (any other exit, with what it means as the event's info). A
  ``supervise`` that could not start, was killed, or exited 2, 3 or 4 leaves the task
  instance queued or running in Airflow's database: the failed event makes the scheduler fail
  it (or retry it) there, so no try is lost;
- :meth:`~TaskvisorExecutor.end` (the scheduler stopping) waits for the running tries to
  finish; a second signal to the scheduler stops them (:meth:`~TaskvisorExecutor.terminate`).

What each ``supervise`` gets (:mod:`taskvisor_airflow.supervise_processes`): the workload as
Airflow dumps it (``ExecuteTask.model_dump_json()``) on its stdin, never in a file; a worker's
environment, which is the scheduler's less the control plane's secrets (``[api_auth]
jwt_secret``, ``[database] sql_alchemy_conn``, ``[core] fernet_key``, ``[api] secret_key``:
every variable named like them), with ``[core] execution_api_server_url`` as Airflow's
executors resolve it. This process holds every try's token, so it forks no task code:
``supervise`` is spawned (exec at once), and forks its task child before it reads the token.

Not (yet) taken: executor callbacks and connection tests (``supports_callbacks`` and
``supports_connection_test`` are False, so Airflow's scheduler keeps them from this
executor), adoption of tries a previous scheduler started, ``revoke_task``, multi-team
configuration, and a log server for running tries (``serve_logs`` is False).
"""

from __future__ import annotations

import os
import signal
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.executors.base_executor import BaseExecutor, get_execution_api_server_url
from airflow.executors.workloads import ExecuteTask

from taskvisor_airflow.supervise_processes import (
    Exit,
    SuperviseProcesses,
    WorkloadTooLarge,
    describe_exit,
    worker_environment,
)

__all__ = ["TaskvisorExecutor", "default_supervise_command"]


def default_supervise_command() -> list[str]:
    """``supervise -``, from the installation this executor runs in (its scripts folder)."""
    return [str(Path(sysconfig.get_path("scripts")) / "supervise"), "-"]


class TaskvisorExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs each task try in a fresh ``supervise -`` on this machine (see the module)."""

    is_local: bool = True
    serve_logs: bool = False
    supports_callbacks: bool = False
    supports_connection_test: bool = False

    #: Seconds :meth:`terminate` gives the tries after SIGTERM (``supervise`` stops its task
    #: within its own ``kill_grace`` and reports it) before it kills what is left.
    stop_grace: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Airflow's arguments (``parallelism``, ``team_name``), as ``ExecutorLoader`` passes."""
        super().__init__(*args, **kwargs)
        #: The running ``supervise`` processes, by TI key; ``processes.command`` is
        #: :func:`default_supervise_command`.
        self.processes: SuperviseProcesses[Any] = SuperviseProcesses(default_supervise_command())
        #: What each ``supervise`` runs with: this process's environment less the control
        #: plane's secrets, with the Execution API's URL.
        self.worker_env = worker_environment(os.environ, get_execution_api_server_url(self.conf))

    def _process_workloads(self, workloads: Sequence[Any]) -> None:
        """Start a ``supervise`` for each workload (Airflow took no more than the open slots)."""
        for workload in workloads:
            if not isinstance(workload, ExecuteTask):
                raise TypeError(f"{type(self).__name__} runs ExecuteTask workloads only")
            key = workload.key
            self.queued_tasks.pop(key, None)
            try:
                pid = self.processes.start(
                    key, workload.model_dump_json().encode(), self.worker_env
                )
            except (OSError, WorkloadTooLarge) as exc:
                self.log.error("Could not start supervise for %s: %s", key, exc)
                self.fail(key, info=f"supervise could not be started: {exc}")
                continue
            self.log.info("Started supervise (pid %d) for %s", pid, key)
            self.running.add(key)
            self.running_state(key)

    def sync(self) -> None:
        """Report every try whose ``supervise`` exited since the last heartbeat."""
        self._report(self.processes.reap())

    def end(self) -> None:
        """Wait for the running tries to finish; if interrupted (the scheduler got a second
        signal), stop them (:meth:`terminate`)."""
        if self.processes:
            self.log.info(
                "Shutting down TaskvisorExecutor: waiting for its running tries (%d) to "
                "finish. Signal again to stop them.",
                len(self.processes),
            )
        try:
            while self.processes:
                self._report(self.processes.wait(None))
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> None:
        """SIGTERM every ``supervise`` (each stops its task and reports the try), wait up to
        :attr:`stop_grace` seconds, then SIGKILL the rest; always wait for all of them."""
        self.processes.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        try:
            while self.processes and (left := deadline - time.monotonic()) > 0:
                self._report(self.processes.wait(left))
        finally:
            if self.processes:
                self.log.warning(
                    "Killing %d supervise processes still running after %s s",
                    len(self.processes),
                    self.stop_grace,
                )
                self.processes.signal(signal.SIGKILL)
            while self.processes:
                self._report(self.processes.wait(None))

    def _report(self, exits: list[Exit[Any]]) -> None:
        for ended in exits:
            if ended.ok:
                self.log.info("supervise (pid %d) for %s exited 0", ended.pid, ended.key)
                self.success(ended.key)
            else:
                info = describe_exit(ended.returncode)
                self.log.warning("%s: %s", ended.key, info)
                self.fail(ended.key, info=info)
