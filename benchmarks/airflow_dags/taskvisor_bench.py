"""The DAG of ``python -m benchmarks --peer airflow``: one trivial task returning 42.

Airflow's own supervisor (``execute_workload``) runs this callable; taskvisor's ``supervise``
runs ``benchmarks/tasks.py:trivial``, which does the same. Parsed only inside Airflow's venv.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

with DAG("taskvisor_bench", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):

    @task
    def trivial() -> int:
        """Return 42, pushed as XCom ``return_value``."""
        return 42

    trivial()
