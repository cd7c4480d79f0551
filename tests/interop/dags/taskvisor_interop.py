"""The DAG the interop tests queue task instances of.

Airflow only needs its task ids: the tests run each task instance with taskvisor's
``supervise`` and their own entrypoints (``tests/interop/tasks.py``), never these callables.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

#: One run of this DAG gives a test up to this many task instances to queue.
TASK_IDS = ("produce", "consume", "work", "check", "report", "cleanup")

with DAG("taskvisor_interop", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):
    for task_id in TASK_IDS:
        EmptyOperator(task_id=task_id)
