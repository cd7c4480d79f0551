"""taskvisor's side of Apache Airflow: the code that imports Airflow.

``supervisor``, ``comms`` and ``sdk`` never import Airflow (``tests/test_import_rules.py``
says so); what needs Airflow lives here and is loaded only where Airflow is installed:

- :class:`TaskvisorExecutor` (:mod:`taskvisor_airflow.executor`): the executor Airflow's
  scheduler loads from ``[core] executor = taskvisor_airflow.TaskvisorExecutor``; it runs
  each task try in a fresh ``supervise``. The only module that imports Airflow's scheduler
  side, and it is loaded only when asked for by name: the task child imports this package too.
- :mod:`taskvisor_airflow.supervise_processes`: the executor's bookkeeping of its
  ``supervise`` processes, without Airflow.
- :mod:`taskvisor_airflow.task_child`: what the task child runs to become Airflow's own task
  runner under ``supervise`` (it imports Airflow's task SDK, never its scheduler side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskvisor_airflow.executor import TaskvisorExecutor

__all__ = ["TaskvisorExecutor"]


def __getattr__(name: str) -> Any:
    """Load :class:`TaskvisorExecutor` on first use, and only then Airflow's scheduler side."""
    if name == "TaskvisorExecutor":
        from taskvisor_airflow.executor import TaskvisorExecutor

        return TaskvisorExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
