"""A real Apache Airflow 3.3.2 api-server for the interop tests, on a free loopback port.

Session set-up (~15 s on an idle machine with a ready virtual environment):

1. ``.airflow-venv`` (git-ignored) holds apache-airflow==3.3.2 and taskvisor (editable, with
   its test extra), installed together under the pins of Airflow's constraints file
   (``constraints/airflow-3.3.txt``), as a user puts taskvisor into Airflow's environment. It
   is created from PyPI when missing, and brought up to date when those pins or
   ``pyproject.toml`` changed. No PyPI means the suite FAILS: interop is not optional.
2. A throw-away ``AIRFLOW_HOME`` with SQLite, a fixed HS512 secret, and this folder's
   ``dags/``. ``airflow_side.py serve`` (in the Airflow venv) migrates the database, then
   serializes the DAG and creates a variable and a connection with Airflow's CLI while the
   api-server boots.
3. ``airflow api-server`` is polled on ``/execution/health`` until it answers, with a deadline.

Tests then queue task instances with :meth:`Airflow.queue` (Airflow's own scheduler-side code
and token generator) and check results through Airflow's REST API and database. Tests that run
a DAG task by task create a dag run with :meth:`Airflow.trigger` and let Airflow's scheduler
logic decide when each task instance is ready (:meth:`Airflow.schedule`); deferred tasks need
the ``triggerer`` fixture, Airflow's own triggerer on the same home.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

AIRFLOW_VERSION = "3.3.2"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV = REPO / ".airflow-venv"
#: Airflow 3.3's pins of taskvisor's runtime dependencies: the low end of their ranges.
CONSTRAINTS = REPO / "constraints" / "airflow-3.3.txt"
DAG_ID = "taskvisor_interop"
DAGS = HERE / "dags"

#: HS512 key shared by the api-server and the token generator (64+ bytes, else PyJWT warns).
JWT_SECRET = "taskvisor-interop-" + "0123456789abcdef" * 4
ADMIN_PASSWORD = "taskvisor-interop-admin"

#: What the session creates with Airflow's CLI, for tasks to read.
VARIABLE = ("interop_greeting", "hello from airflow")
CONNECTION_ID = "interop_db"
CONNECTION_URI = (
    "postgres://interop_user:s3cr3t-interop-pass@db.example:5432/interop?sslmode=disable"
)
CONNECTION_PASSWORD = "s3cr3t-interop-pass"
#: A file-system connection (``fs``) whose path is the home's ``landing/`` folder: file
#: sensors and their triggers wait for files the tests put there.
LANDING_CONNECTION_ID = "interop_landing"

#: Life of the execution tokens Airflow issues on /run. Short, with no leeway, so any response
#: carries a reissued token (Airflow reissues once <= 30 s are left) and a supervisor that does
#: not adopt them is refused within 20 s. Airflow's default is 600 s with 10 s leeway.
EXECUTION_TOKEN_LIFETIME = 20

INSTALL_TIMEOUT = 900
HEALTH_TIMEOUT = 180  # the api-server answers after ~16 s on an idle 2-core machine
SIDE_TIMEOUT = 300  # one airflow_side.py command: `db migrate` is the slowest (~4 s idle)
SCHEDULE_TIMEOUT = 60  # for Airflow's scheduler logic to make a task instance ready
SCHEDULE_POLL = 0.2


def _installed_airflow(python: Path) -> str | None:
    """The apache-airflow version importable by ``python``, or None."""
    if not python.exists():
        return None
    probe = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('apache-airflow'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def _fail_with(what: str, result: subprocess.CompletedProcess[str]) -> None:
    tail = (result.stdout + result.stderr)[-4000:]
    pytest.fail(f"{what} failed (exit {result.returncode}); interop needs it:\n{tail}", False)


def ensure_airflow_venv(venv: Path = VENV) -> Path:
    """Return the Airflow venv's python, with Airflow and taskvisor installed together under
    :data:`CONSTRAINTS` (creating or updating the venv from PyPI if needed, or failing)."""
    python = venv / "bin" / "python"
    stamp = venv / "taskvisor-install.stamp"
    wanted = _install_stamp()
    if _installed_airflow(python) == AIRFLOW_VERSION and _read(stamp) == wanted:
        return python
    if not python.exists():
        base = shutil.which("python3.11") or sys.executable
        made = subprocess.run(
            [base, "-m", "venv", "--clear", venv], capture_output=True, text=True, check=False
        )
        if made.returncode:
            _fail_with(f"creating {venv}", made)
    try:
        pip = subprocess.run(
            [
                *(python, "-m", "pip", "install", "--quiet", "--constraint", CONSTRAINTS),
                f"apache-airflow=={AIRFLOW_VERSION}",
                *("--editable", f"{REPO}[test]", "--config-settings", "editable_mode=compat"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip install apache-airflow took over {INSTALL_TIMEOUT} s", False)
    if pip.returncode:
        _fail_with(
            f"pip install apache-airflow=={AIRFLOW_VERSION} and taskvisor under {CONSTRAINTS.name}"
            " (is PyPI reachable?)",
            pip,
        )
    if _installed_airflow(python) != AIRFLOW_VERSION:
        pytest.fail(f"{venv} does not import apache-airflow {AIRFLOW_VERSION} after install")
    stamp.write_text(wanted)
    return python


def _install_stamp() -> str:
    """What the venv was installed from: any change to it means installing again."""
    inputs = (
        AIRFLOW_VERSION.encode(),
        CONSTRAINTS.read_bytes(),
        (REPO / "pyproject.toml").read_bytes(),
    )
    return hashlib.sha256(b"\0".join(inputs)).hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="session")
def airflow_installer() -> Callable[[Path], Path]:
    """:func:`ensure_airflow_venv`, for tests of the harness itself."""
    return ensure_airflow_venv


#: Runs a script in the Airflow venv: ``run(script, env=..., cwd=..., stdin="")``; the script
#: prints one JSON document as its last line (Airflow may log to stdout before it).
AirflowScript = Callable[..., Any]


@pytest.fixture(scope="session")
def run_airflow_script() -> AirflowScript:
    """Run a ``python -c`` script in the Airflow venv and return the JSON it printed last."""
    python = ensure_airflow_venv()

    def run(script: str, *, env: dict[str, str], cwd: Path, stdin: str = "") -> Any:
        result = subprocess.run(
            [python, "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return json.loads(result.stdout.splitlines()[-1])

    return run


@pytest.fixture(scope="module")
def run_in_airflow(
    run_airflow_script: AirflowScript, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Any]:
    """``run(script, stdin="")`` in the Airflow venv, in a fresh home with no server."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    # One attempt per call: no fake answer a test gives is worth Airflow's retry back-off.
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__WORKERS__EXECUTION_API_RETRIES="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return lambda script, stdin="": run_airflow_script(script, env=env, cwd=home, stdin=stdin)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowSide:
    """``airflow_side.py serve`` in the Airflow venv: one JSON request and answer per line."""

    def __init__(self, python: Path, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self._proc = subprocess.Popen(
            [python, HERE / "airflow_side.py", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )

    def send(self, cmd: str, **args: Any) -> None:
        """Send a request without waiting for its answer (see :meth:`receive`)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self._proc.stdin.flush()

    def receive(self) -> Any:
        """The answer to the oldest request not yet received; fails the test on an error."""
        assert self._proc.stdout is not None
        # One request is outstanding at a time, so no answer line waits in the text buffer
        # while select() looks at the pipe.
        ready, _, _ = select.select([self._proc.stdout], [], [], SIDE_TIMEOUT)
        if not ready:
            pytest.fail(f"airflow_side.py gave no answer within {SIDE_TIMEOUT} s", False)
        line = self._proc.stdout.readline()
        if not line:
            tail = self.stderr_path.read_text(errors="replace")[-4000:]
            pytest.fail(f"airflow_side.py exited ({self._proc.poll()}):\n{tail}", False)
        answer = json.loads(line)
        if not answer["ok"]:
            pytest.fail(f"airflow_side.py {answer['error']}", False)
        return answer["result"]

    def call(self, cmd: str, **args: Any) -> Any:
        """Run one command in the Airflow venv and return its result."""
        self.send(cmd, **args)
        return self.receive()

    def close(self) -> None:
        """End the helper (EOF on its stdin) and wait for it."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._stderr.close()


@dataclass
class Workload:
    """One queued task instance: Airflow's ``ExecuteTask`` workload, as JSON."""

    raw: dict[str, Any]

    @property
    def ti(self) -> dict[str, Any]:
        """The TI identity, in the shape of taskvisor's activity file."""
        ti = self.raw["ti"]
        keys = ("id", "dag_id", "task_id", "run_id", "try_number", "map_index")
        return {key: ti[key] for key in keys}

    @property
    def id(self) -> str:
        """The task instance id (a new one for each try)."""
        return str(self.raw["ti"]["id"])

    @property
    def token(self) -> str:
        """The workload-scoped JWT Airflow minted for this try."""
        return str(self.raw["token"])

    @property
    def dag_id(self) -> str:
        """The DAG id."""
        return str(self.raw["ti"]["dag_id"])

    @property
    def run_id(self) -> str:
        """The dag run id."""
        return str(self.raw["ti"]["run_id"])

    @property
    def task_id(self) -> str:
        """The task id."""
        return str(self.raw["ti"]["task_id"])

    @property
    def map_index(self) -> int:
        """The map index; -1 for an unmapped task."""
        return int(self.raw["ti"]["map_index"])

    @property
    def log_path(self) -> str:
        """Relative to Airflow's ``[logging] base_log_folder``."""
        return str(self.raw["log_path"])


@dataclass(frozen=True)
class DagRun:
    """A dag run the tests drive task by task, as Airflow stored it."""

    dag_id: str
    run_id: str
    #: ISO-8601, or None for a run without one (then templates get no ``ds``).
    logical_date: str | None


@dataclass
class Airflow:
    """The running api-server and ways to drive and inspect it the way Airflow would.

    Tests reach it only through the ``airflow`` fixture (test modules never import conftest):
    what the session created is on it as class attributes.
    """

    dag_id: ClassVar[str] = DAG_ID
    variable: ClassVar[tuple[str, str]] = VARIABLE
    connection_id: ClassVar[str] = CONNECTION_ID
    connection_password: ClassVar[str] = CONNECTION_PASSWORD
    landing_connection_id: ClassVar[str] = LANDING_CONNECTION_ID
    execution_token_lifetime: ClassVar[int] = EXECUTION_TOKEN_LIFETIME

    home: Path
    base_url: str
    side: AirflowSide
    rest: httpx.Client
    #: The environment of Airflow's server processes (database, signing secret, ...).
    env: dict[str, str]
    _runs: Iterator[int] = field(default_factory=itertools.count)

    @property
    def execution_url(self) -> str:
        """The Execution API base URL an activity file names as ``server``."""
        return f"{self.base_url}/execution/"

    @property
    def log_folder(self) -> Path:
        """Airflow's ``[logging] base_log_folder``: workload log paths are relative to it."""
        return self.home / "logs"

    @property
    def landing_folder(self) -> Path:
        """The path of the ``interop_landing`` connection: where file sensors look."""
        return self.home / "landing"

    @property
    def worker_env(self) -> dict[str, str]:
        """The environment a worker runs a workload with.

        Where Airflow's home, Execution API server, log folder and DAGs are; no database URL
        and no JWT signing secret, which a worker needs neither of.
        """
        env = {k: v for k, v in self.env.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=self.execution_url,
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(self.log_folder),
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        )
        return env

    def trigger(
        self, dag_id: str, *, logical_date: dt.datetime | None = None, conf: Any = None
    ) -> DagRun:
        """Create a running dag run of ``dag_id``; :meth:`schedule` then queues its tasks."""
        run_id = f"interop__{next(self._runs)}_{uuid.uuid4().hex[:8]}"
        created = self.side.call(
            "trigger",
            dag_id=dag_id,
            run_id=run_id,
            logical_date=logical_date.isoformat() if logical_date else None,
            conf=conf,
        )
        return DagRun(dag_id, run_id, created["logical_date"])

    def schedule(
        self, run: DagRun, *keys: str, timeout: float = SCHEDULE_TIMEOUT
    ) -> dict[str, Workload]:
        """Queue these task instances of ``run`` once Airflow's scheduler logic makes them ready.

        ``keys`` are ``task_id`` or ``task_id[map_index]``. Each pass is one of the scheduler's
        (trigger rules, map expansion, retry and reschedule delays, a fired trigger); passes
        repeat until every one of them is queued, failing after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.side.call("schedule", dag_id=run.dag_id, run_id=run.run_id, tasks=keys)
            if "workloads" in result:
                return {key: Workload(raw) for key, raw in result["workloads"].items()}
            if time.monotonic() > deadline:
                pytest.fail(f"not ready to queue after {timeout} s: {result['waiting']}", False)
            time.sleep(SCHEDULE_POLL)

    def queue(self, **max_tries: int) -> dict[str, Workload]:
        """Queue the named tasks of a new dag run: ``queue(produce=0, work=2)``."""
        return self._queue({task_id: {"max_tries": tries} for task_id, tries in max_tries.items()})

    def queue_mapped(self, task_id: str, *map_indexes: int) -> list[Workload]:
        """Queue these map indexes of mapped task ``task_id`` in a new dag run (no retries)."""
        keys = [f"{task_id}[{index}]" for index in map_indexes]
        queued = self._queue({key: {"max_tries": 0} for key in keys})
        return [queued[key] for key in keys]

    def _queue(self, tasks: dict[str, dict[str, int]]) -> dict[str, Workload]:
        run_id = f"interop__{next(self._runs)}_{uuid.uuid4().hex[:8]}"
        result = self.side.call("queue", dag_id=DAG_ID, run_id=run_id, tasks=tasks)
        return {key: Workload(raw) for key, raw in result["workloads"].items()}

    def resume(self, workload: Workload) -> Workload:
        """Run the trigger a deferred task waits on, as Airflow's triggerer; queue it again."""
        return Workload(self.side.call("resume", id=workload.id)["workload"])

    def retry(self, workload: Workload) -> Workload:
        """Schedule and queue the next try of an up_for_retry task, as Airflow's scheduler."""
        ti = workload.ti
        key = {k: ti[k] for k in ("dag_id", "run_id", "task_id", "map_index")}
        return Workload(self.side.call("retry", **key)["workload"])

    def mint(self, workload: Workload, scope: str, valid_for: float) -> str:
        """A token for this task instance, signed by Airflow's generator, of this scope and life."""
        result = self.side.call("mint", id=workload.id, scope=scope, valid_for=valid_for)
        return str(result["token"])

    def tis(self, *workloads: Workload) -> dict[str, dict[str, Any]]:
        """Airflow's database rows of these task instances, by TI id."""
        return self.side.call("tis", ids=[w.id for w in workloads])  # type: ignore[no-any-return]

    def ti_row(self, workload: Workload) -> dict[str, Any]:
        """Airflow's database row of one task instance."""
        return self.tis(workload)[workload.id]

    def rest_ti(self, workload: Workload) -> dict[str, Any]:
        """The task instance as Airflow's public REST API reports it."""
        response = self.rest.get(self._ti_path(workload))
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def rest_xcom(self, workload: Workload, key: str = "return_value") -> httpx.Response:
        """``GET .../xcomEntries/{key}`` from Airflow's public REST API (deserialized)."""
        path = f"/api/v2/dags/{workload.dag_id}/dagRuns/{workload.run_id}/taskInstances"
        return self.rest.get(
            f"{path}/{workload.task_id}/xcomEntries/{key}",
            params={"map_index": workload.map_index},
        )

    def rest_set_state(self, workload: Workload, state: str) -> None:
        """Set a task instance's state the way a user does in Airflow's UI."""
        response = self.rest.patch(self._ti_path(workload), json={"new_state": state})
        response.raise_for_status()

    def rest_clear(self, workload: Workload) -> None:
        """Clear a task instance the way a user does in Airflow's UI (also while it runs)."""
        response = self.rest.post(
            f"/api/v2/dags/{workload.dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": workload.run_id,
                "task_ids": [workload.task_id],
                "only_failed": False,
                "reset_dag_runs": False,
            },
        )
        response.raise_for_status()

    def rest_log(self, workload: Workload, try_number: int = 1) -> list[dict[str, Any]]:
        """The task log as Airflow's REST API (its log reader) serves it to the UI."""
        response = self.rest.get(
            f"{self._ti_path(workload)}/logs/{try_number}",
            headers={"Accept": "application/json"},
            params={"full_content": "true"},
        )
        response.raise_for_status()
        return response.json()["content"]  # type: ignore[no-any-return]

    def rest_json(self, path: str, **params: Any) -> Any:
        """``GET path`` on Airflow's public REST API, as JSON; an error status fails."""
        response = self.rest.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def rest_trigger(self, dag_id: str) -> str:
        """Unpause ``dag_id`` and trigger a run through the REST API, as a user does in the UI
        (for a running scheduler to run); return the run id."""
        self.rest.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        created = self.rest.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        created.raise_for_status()
        return str(created.json()["dag_run_id"])

    def rest_task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """A try's log records as Airflow's log reader serves them, by task id and map index."""
        response = self.rest.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            headers={"Accept": "application/json"},
            params={"full_content": "true", "map_index": map_index},
        )
        response.raise_for_status()
        return response.json()["content"]  # type: ignore[no-any-return]

    def _ti_path(self, workload: Workload) -> str:
        path = (
            f"/api/v2/dags/{workload.dag_id}/dagRuns/{workload.run_id}"
            f"/taskInstances/{workload.task_id}"
        )
        return path if workload.map_index == -1 else f"{path}/{workload.map_index}"


def _airflow_env(home: Path, port: int) -> dict[str, str]:
    """Environment of every Airflow process: this home, SQLite, the secret, loopback URLs.

    Airflow's token defaults are kept here (``benchmarks/peer_airflow.py`` uses this too);
    the test session shortens execution tokens on top.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base = f"http://127.0.0.1:{port}"
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        AIRFLOW__API_AUTH__JWT_SECRET=JWT_SECRET,
        AIRFLOW__API__BASE_URL=base,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _wait_healthy(server: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            pytest.fail(f"airflow api-server exited ({server.returncode}):\n{tail}", False)
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/execution/health", timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-4000:]
    pytest.fail(f"airflow api-server not healthy after {HEALTH_TIMEOUT} s:\n{tail}", False)


def _stop(server: subprocess.Popen[bytes], grace: float = 3) -> None:
    """TERM a server's process group, KILL it after ``grace`` seconds, and wait.

    3 s by default: a throw-away server need not be waited for through its slow shutdown.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """A running Airflow 3.3.2 api-server with the interop DAG, a variable and a connection."""
    python = ensure_airflow_venv()
    airflow_bin = python.with_name("airflow")
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "passwords.json").write_text(json.dumps({"admin": ADMIN_PASSWORD}))
    landing = home / "landing"
    landing.mkdir()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = _airflow_env(home, port)
    env["AIRFLOW__API_AUTH__JWT_LEEWAY"] = "0"
    env["AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME"] = str(EXECUTION_TOKEN_LIFETIME)

    side = AirflowSide(python, env, home / "airflow_side.stderr")
    side.call("cli", commands=[["db", "migrate"]])
    server_log = home / "api-server.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [airflow_bin, "api-server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, so teardown reaches its workers
        )
    try:
        # While the server boots (~16 s), create what tasks need with Airflow's CLI.
        side.send(
            "cli",
            commands=[
                ["dags", "reserialize"],
                ["variables", "set", *VARIABLE],
                ["connections", "add", CONNECTION_ID, "--conn-uri", CONNECTION_URI],
                [
                    *("connections", "add", LANDING_CONNECTION_ID, "--conn-type", "fs"),
                    *("--conn-extra", json.dumps({"path": str(landing)})),
                ],
            ],
        )
        _wait_healthy(server, base_url, server_log)
        side.receive()
        login = httpx.post(
            f"{base_url}/auth/token",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            timeout=30,
        )
        login.raise_for_status()
        rest = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
            timeout=30,
        )
        with rest:
            yield Airflow(home=home, base_url=base_url, side=side, rest=rest, env=env)
    finally:
        _stop(server)
        side.close()


@dataclass
class Triggerer:
    """A running ``airflow triggerer`` on the session's Airflow home."""

    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        """The end of its output, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


def _wait_triggerer_healthy(triggerer: Triggerer, rest: httpx.Client) -> None:
    """Until Airflow's own health check reports the triggerer's heartbeat as healthy."""
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        if triggerer.process.poll() is not None:
            code = triggerer.process.returncode
            pytest.fail(f"airflow triggerer exited ({code}):\n{triggerer.tail()}", False)
        health = rest.get("/api/v2/monitor/health").json()
        if health["triggerer"]["status"] == "healthy":
            return
        time.sleep(0.25)
    pytest.fail(f"airflow triggerer not healthy after {HEALTH_TIMEOUT} s:\n{triggerer.tail()}")


@pytest.fixture(scope="session")
def triggerer(airflow: Airflow) -> Iterator[Triggerer]:
    """Airflow's own triggerer, running deferred tasks' triggers (healthy when yielded)."""
    log = airflow.home / "triggerer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            # No log server: Airflow binds it to every interface ([::] or 0.0.0.0), with no
            # setting for loopback only; the tests read no trigger logs.
            [VENV / "bin" / "airflow", "triggerer", "--skip-serve-logs"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=airflow.env,
            start_new_session=True,  # its own process group: teardown reaches its subprocess
        )
    running = Triggerer(process, log)
    try:
        _wait_triggerer_healthy(running, airflow.rest)
        yield running
    finally:
        _stop(process)


#: How long a scheduler gets to end on SIGTERM: its executor lets running tries finish first.
SCHEDULER_STOP_GRACE = 60


@dataclass
class Scheduler:
    """A running ``airflow scheduler`` on the session's Airflow home, and its output."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything it (and whatever it started on its stdout) wrote so far."""
        return self.log.read_text(errors="replace")


#: ``start_scheduler(executor, **settings)``: see the fixture.
StartScheduler = Callable[..., AbstractContextManager[Scheduler]]


@pytest.fixture(scope="session")
def start_scheduler(airflow: Airflow) -> StartScheduler:
    """``with start_scheduler("module.Executor", PARALLELISM="3") as scheduler:`` runs
    Airflow's scheduler on the session's home with that ``[core] executor`` and ``[core]``
    settings; on leaving, it is stopped (TERM, :data:`SCHEDULER_STOP_GRACE`, KILL) and
    waited for, if it has not exited already."""
    starts = itertools.count()

    @contextlib.contextmanager
    def start(executor: str, **core: str) -> Iterator[Scheduler]:
        env = {**airflow.env, "AIRFLOW__CORE__EXECUTOR": executor}
        env.update({f"AIRFLOW__CORE__{name.upper()}": value for name, value in core.items()})
        log = airflow.home / f"scheduler-{next(starts)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                # No log server: Airflow binds it to every interface ([::] or 0.0.0.0).
                [VENV / "bin" / "airflow", "scheduler", "--skip-serve-logs"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so teardown reaches it all
            )
        try:
            yield Scheduler(process, log)
        finally:
            if process.poll() is None:
                _stop(process, SCHEDULER_STOP_GRACE)

    return start
