"""DAGs that Airflow's own scheduler runs under ``TaskvisorExecutor``.

Nothing here knows about taskvisor.

- ``taskvisor_executor`` (``tests/interop/test_taskvisor_executor.py``): a mapped task and its
  reducer, a BashOperator, a PythonOperator, a task that fails on its first try and succeeds
  on its retry, and a probe that reports (names and digests, never values) what its own
  environment and its supervisor's hold.
- ``taskvisor_executor_gated`` (``tests/interop/test_taskvisor_executor_shutdown.py``): one
  task that runs until the test opens its gate (a Variable named for the run), so the
  scheduler can be stopped while it runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Variable, get_current_context, task

DAG_ID = "taskvisor_executor"
GATED_DAG_ID = "taskvisor_executor_gated"


def greet(name: str) -> str:
    """PythonOperator's callable: its return value is its XCom."""
    print(f"python says hello to {name}")
    return f"hello {name}"


def environment_block(path: str) -> dict[str, str] | None:
    """A ``/proc/<pid>/environ`` as a dict, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return None
    pairs = (entry.split(b"=", 1) for entry in entries if b"=" in entry)
    return {os.fsdecode(name): os.fsdecode(value) for name, value in pairs}


def described(environ: dict[str, str] | None) -> dict[str, Any] | None:
    """An environment as its names and the SHA-256 of each value: nothing secret leaves."""
    if environ is None:
        return None
    return {
        "names": sorted(environ),
        "digests": sorted(
            {hashlib.sha256(value.encode()).hexdigest() for value in environ.values()}
        ),
    }


with DAG(
    DAG_ID,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={"retries": 0},
    tags=["taskvisor-interop"],
):

    @task
    def make_batches() -> list[int]:
        """The list the scheduler expands ``square`` over."""
        return [2, 3, 4]

    @task
    def square(n: int) -> int:
        """One mapped task instance per batch."""
        print(f"squaring {n}")
        return n * n

    @task
    def total(squares: list[int]) -> int:
        """The reducer: every mapped result, pulled as one list."""
        print(f"adding up {sorted(squares)}")
        return sum(squares)

    total(square.expand(n=make_batches()))

    BashOperator(
        task_id="bash_echo",
        bash_command='echo "bash runs as try $AIRFLOW_CTX_TRY_NUMBER"; echo "bash done"',
    )

    PythonOperator(task_id="python_greets", python_callable=greet, op_args=["taskvisor"])

    @task(retries=1, retry_delay=dt.timedelta(seconds=0))
    def flaky() -> str:
        """Fail the first try; the scheduler retries it and the second try succeeds."""
        try_number = get_current_context()["ti"].try_number
        if try_number == 1:
            raise RuntimeError("flaky fails its first try on purpose")
        print(f"flaky recovered on try {try_number}")
        return f"recovered on try {try_number}"

    @task(multiple_outputs=False)  # one XCom, though it returns a dict
    def probe() -> dict[str, Any]:
        """What this task and its supervisor (its parent) hold in their environments."""
        parent = os.getppid()
        try:
            with open(f"/proc/{parent}/cmdline", "rb") as f:
                parent_cmdline = [os.fsdecode(a) for a in f.read().split(b"\0") if a]
        except OSError:
            parent_cmdline = None
        return {
            "own": described(dict(os.environ)),
            "own_at_start": described(environment_block("/proc/self/environ")),
            "parent": described(environment_block(f"/proc/{parent}/environ")),
            "parent_cmdline": parent_cmdline,
        }

    flaky()
    probe()


def gate(run_id: str) -> str:
    """The Variable that opens ``gated``'s gate in run ``run_id``."""
    return f"taskvisor_gate__{run_id}"


with DAG(
    GATED_DAG_ID,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["taskvisor-interop"],
):
    # A retry, an hour later: a try stopped on the way out stays up_for_retry for the test.
    @task(retries=1, retry_delay=dt.timedelta(hours=1))
    def gated() -> str:
        """Run until the test sets this run's gate Variable."""
        run_id = get_current_context()["run_id"]
        print(f"gated waits at its gate {gate(run_id)}", flush=True)
        while Variable.get(gate(run_id), default=None) is None:
            time.sleep(0.2)
        print("the gate is open")
        return "passed the gate"

    gated()
