"""DAG tasks that test what the supervisor, not Airflow's runner, must do for them.

Run by ``tests/interop/test_airflow_dag_supervision.py`` under ``supervise``: a task that
escapes its own ``execution_timeout``, one that runs until Airflow says stop, one that leaks a
connection's password on every output path, and one that writes on the runner's channel.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import time

from airflow.sdk import DAG, Connection, task

#: The connection the interop session creates (tests/interop/conftest.py).
CONNECTION_ID = "interop_db"

with DAG(
    "taskvisor_dag_supervision", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False
):

    @task(execution_timeout=dt.timedelta(seconds=2))
    def ignores_its_timer() -> None:
        """Blocks SIGALRM, as native code holding the GIL would: Airflow's timer cannot fire."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        print("timer blocked", flush=True)
        time.sleep(120)

    @task
    def runs_until_stopped() -> None:
        """Runs until something outside stops it."""
        print("running until stopped", flush=True)
        time.sleep(120)

    @task
    def leaks_a_password() -> None:
        """Writes a connection's password to stdout, stderr, a log record and its exception."""
        password = Connection.get(CONNECTION_ID).password
        print(f"stdout: {password}", flush=True)
        print(f"stderr: {password}", file=sys.stderr, flush=True)
        logging.getLogger(__name__).warning("log record: %s", password)
        raise ValueError(f"exception: {password}")

    @task
    def writes_on_the_channel() -> None:
        """Task code writing a frame of its own on the runner's channel (fd 0)."""
        os.write(0, b"\x00\x00\x00\x05hello")
        time.sleep(120)

    ignores_its_timer()
    runs_until_stopped()
    leaks_a_password()
    writes_on_the_channel()
