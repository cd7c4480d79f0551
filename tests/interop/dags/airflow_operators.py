"""A DAG of Airflow's own operators, run unchanged by ``tests/interop/test_airflow_dags.py``.

Unlike ``taskvisor_interop.py`` these callables DO run: the tests hand each task instance's
``ExecuteTask`` workload, exactly as Airflow makes it, to a supervisor (Airflow's own, or
taskvisor's ``supervise``), which hosts Airflow's task runner, which parses this file. Only what
apache-airflow 3.3.2 ships is used (``airflow.sdk`` and the standard provider).

Each behaviour is its own small sub-graph, so the tests can share one dag run and still run
independently. What a task leaves behind for the tests to check is keyed by the run id
(Variables named ``taskvisor_<what>__<run_id>``), so runs never see each other's.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import re
import time
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, Asset, BaseHook, Connection, Param, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

DAG_ID = "taskvisor_airflow_dags"
#: The asset ``produces_asset`` updates; Airflow records one event per successful try.
ASSET = Asset(name="taskvisor_interop_asset", uri="file:///tmp/taskvisor-interop/asset.csv")
#: What the session created with Airflow's CLI (``tests/interop/conftest.py``).
VARIABLE_KEY = "interop_greeting"
CONNECTION_ID = "interop_db"
LANDING_CONNECTION_ID = "interop_landing"

#: A JWT in a process' memory: three base64url parts, the first two JSON objects (``eyJ``).
JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def jwt_summary(token: bytes) -> dict[str, Any]:
    """A JWT found in memory: its SHA-256, and the ``sub`` and ``scope`` it claims (if any).

    The claims name the token even when bytes next to it in memory made the match longer.
    """
    claims: dict[str, Any] = {}
    payload = token.split(b".")[1]
    with contextlib.suppress(ValueError):
        decoded = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        if isinstance(decoded, dict):
            claims = decoded
    return {
        "sha256": hashlib.sha256(token).hexdigest(),
        "sub": claims.get("sub"),
        "scope": claims.get("scope"),
    }


def run_scoped(what: str, run_id: str) -> str:
    """The Variable a task of run ``run_id`` leaves ``what`` in (or waits for)."""
    return f"taskvisor_{what}__{run_id}"


def echo_templates(ds: str, run_id: str, greeting: str, variable: str) -> dict[str, str]:
    """Return what Airflow rendered into ``op_kwargs``."""
    print(f"rendered for {run_id}: ds={ds} greeting={greeting!r}")
    return {"ds": ds, "run_id": run_id, "greeting": greeting, "variable": variable}


def gate_is_open(run_id: str) -> bool:
    """Poke: open once the test sets this run's gate Variable."""
    gate = Variable.get(run_scoped("gate", run_id), default=None)
    print(f"gate for {run_id} is {gate!r}")
    return gate is not None


def record_failure(context: Any) -> None:
    """``on_failure_callback``: leave the failure where the test can see it."""
    ti = context["ti"]
    record = {
        "task_id": ti.task_id,
        "try_number": ti.try_number,
        "error": str(context["exception"]),
    }
    Variable.set(run_scoped("failure", context["run_id"]), json.dumps(record))


def fail_on_purpose() -> None:
    """Fail with an ordinary exception (its callback records it)."""
    raise ValueError("taskvisor interop: this task fails on purpose")


def sleep_past_the_timeout() -> None:
    """Run far past ``execution_timeout``: Airflow must stop it."""
    print("sleeping past my execution_timeout")
    time.sleep(120)
    print("woke up: the timeout did not fire")


with DAG(
    DAG_ID,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    params={"greeting": Param("hello", type="string")},
    default_args={"retries": 0},
    tags=["taskvisor-interop"],
):
    # Templated arguments: context, params (overridden by the run's conf) and a Variable.
    PythonOperator(
        task_id="templated_python",
        python_callable=echo_templates,
        op_kwargs={
            "ds": "{{ ds }}",
            "run_id": "{{ run_id }}",
            "greeting": "{{ params.greeting }}",
            "variable": "{{ var.value.interop_greeting }}",
        },
    )

    # The last line a bash command prints is its return_value; AIRFLOW_CTX_* come from Airflow.
    BashOperator(
        task_id="bash_echo",
        bash_command=(
            'echo "bash says {{ params.greeting }} on {{ ds }}"; '
            'echo "run=$AIRFLOW_CTX_DAG_RUN_ID task=$AIRFLOW_CTX_TASK_ID"'
        ),
    )

    # TaskFlow: XComArgs (a whole return value and its keys) passed between tasks.
    @task(multiple_outputs=True)
    def extract() -> dict[str, Any]:
        """Return several outputs; each becomes its own XCom too."""
        return {"numbers": [3, 4, 5], "unit": "kg"}

    @task
    def summarize(numbers: list[int], unit: str) -> str:
        """Combine two of ``extract``'s outputs."""
        return f"{sum(numbers)} {unit}"

    extracted = extract()
    summarize(numbers=extracted["numbers"], unit=extracted["unit"])

    # Dynamic task mapping over an upstream's returned list, and a reducer of the results.
    @task
    def make_batches() -> list[int]:
        """The list the scheduler expands ``square`` over."""
        return [2, 3]

    @task
    def square(batch: int) -> int:
        """One mapped task instance per batch."""
        return batch * batch

    @task
    def total(squares: list[int]) -> int:
        """Reduce every mapped task instance's return value."""
        return sum(squares)

    total(square.expand(batch=make_batches()))

    # A sensor that gives its worker slot back between pokes.
    PythonSensor(
        task_id="wait_for_gate",
        python_callable=gate_is_open,
        op_kwargs={"run_id": "{{ run_id }}"},
        mode="reschedule",
        poke_interval=1,
        timeout=600,
    )

    # Deferral: the sensor hands a FileTrigger to Airflow's triggerer, which fires once the
    # file lands; the task instance is then resumed in ``execute_complete``.
    FileSensor(
        task_id="wait_for_file",
        fs_conn_id=LANDING_CONNECTION_ID,
        filepath="{{ run_id }}.ready",
        deferrable=True,
        poke_interval=0.5,
        timeout=600,
    )

    PythonOperator(
        task_id="fails_with_callback",
        python_callable=fail_on_purpose,
        on_failure_callback=record_failure,
    )

    @task(retries=1, retry_delay=dt.timedelta(seconds=0))
    def flaky() -> int:
        """Fail on try 1, succeed on try 2: return the try that succeeded."""
        try_number = get_current_context()["ti"].try_number
        if try_number == 1:
            raise RuntimeError("taskvisor interop: try 1 fails on purpose")
        return int(try_number)

    flaky()

    @task
    def skips() -> None:
        """Skip itself; the scheduler then skips what depends on it."""
        raise AirflowSkipException("taskvisor interop: nothing to do")

    @task
    def after_skip() -> None:
        """Never runs: its only upstream skips."""

    skips() >> after_skip()

    @task.branch
    def choose() -> str:
        """Follow one branch; Airflow skips the other."""
        return "branch_taken"

    @task
    def branch_taken() -> str:
        """The chosen branch."""
        return "taken"

    @task
    def branch_not_taken() -> str:
        """The branch ``choose`` does not follow."""
        return "not taken"

    choose() >> [branch_taken(), branch_not_taken()]

    @task
    def reads_variable_and_connection() -> dict[str, Any]:
        """Read a Variable and a Connection through ``airflow.sdk``, both ways."""
        conn = BaseHook.get_connection(CONNECTION_ID)
        same = Connection.get(CONNECTION_ID)
        # Airflow's runner registered the password as a secret: the log must show ***.
        print(f"connecting to {conn.host} as {conn.login} with password {conn.password}")
        return {
            "greeting": Variable.get(VARIABLE_KEY),
            "host": conn.host,
            "port": conn.port,
            "login": conn.login,
            "schema": conn.schema,
            "same_password": same.password == conn.password,
        }

    reads_variable_and_connection()

    @task(outlets=[ASSET])
    def produces_asset() -> None:
        """Update ``ASSET``, with extra data on the event."""
        get_current_context()["outlet_events"][ASSET].extra = {"rows": 3}

    produces_asset()

    PythonOperator(
        task_id="overruns",
        python_callable=sleep_past_the_timeout,
        execution_timeout=dt.timedelta(seconds=3),
    )

    @task
    def finds_workload_token() -> dict[str, Any]:
        """Search this process' own memory for JWTs; report each one's digest and claims.

        The task is never given a token: whatever this finds, its supervisor left in memory
        the task inherited, or handed it some other way.
        """
        found: set[bytes] = set()
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                fields = line.split()
                span, perms = fields[0], fields[1]
                if not perms.startswith("r") or fields[-1] in ("[vvar]", "[vsyscall]"):
                    continue
                start, end = (int(part, 16) for part in span.split("-"))
                try:
                    mem.seek(start)
                    region = mem.read(end - start)
                except (OSError, OverflowError, ValueError):
                    continue  # a region that vanished or cannot be read
                found.update(JWT_SHAPE.findall(region))
        print(f"found {len(found)} JWT-shaped strings in my memory")
        return {"jwts": sorted((jwt_summary(token) for token in found), key=str)}

    finds_workload_token()
