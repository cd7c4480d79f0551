"""The DAG the interop tests queue task instances of.

Airflow only needs its task ids: the tests run each task instance with taskvisor's
``supervise`` and their own entrypoints (``tests/interop/tasks.py``), never these callables.
They are real (non-empty) tasks, so Airflow's scheduler code schedules them for execution
instead of marking them successful on the spot as it does with ``EmptyOperator``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

#: One run of this DAG gives a test up to this many task instances to queue.
TASK_IDS = ("produce", "consume", "work", "check", "report", "cleanup")


def placeholder() -> None:
    """Never called: taskvisor runs the entrypoint named in the activity instead."""


def one_item(item: int) -> None:
    """Never called either; its expansion gives ``fan_out`` map indexes 0, 1 and 2."""


with DAG("taskvisor_interop", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):
    for task_id in TASK_IDS:
        task(task_id=task_id)(placeholder)()
    task(task_id="fan_out")(one_item).expand(item=[1, 2, 3])
