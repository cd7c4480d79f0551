"""A DAG task hunting for its supervisor's secrets, under ``supervise`` and under Airflow's own
supervisor (issue 13: "the security suite probes a DAG task's own memory, environment, argv and
fds for the token").

The task (``dags/airflow_probe.py``) is ordinary DAG code run by Airflow's own task runner. It is
given no secret: it reports the digests of every JWT-shaped string it can read, and where it
met the fingerprints this test hands it (a value's first 8 characters, length and SHA-256), so
the test never puts in the task what it looks for, and a hit means the whole value is there. Its
report comes back as its XCom, through Airflow's REST API.

Both supervisors get the same kind of workload (Airflow's ``ExecuteTask``, queued by Airflow's
own code, in a file) and the same environment: a worker's, plus what a careless executor would
pass on from the scheduler's (the api-server's JWT signing secret, a database URL, a fernet
key). Both run as root without ``CAP_SYS_PTRACE``, as in a container with Docker's default
capabilities: with it, root reads any process' memory, non-dumpable or not (docs/security.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # test modules take the harness from the `airflow` fixture, never import it
    from conftest import Airflow

HERE = Path(__file__).resolve().parent
VENV_BIN = HERE.parents[1] / ".airflow-venv" / "bin"
DAG_ID = "taskvisor_probe"
TASK_ID = "hunts_for_secrets"
RUN_TIMEOUT = 120  # seconds; a run takes ~2 s

#: Where a task would find the token in its own process (``fd:<n>`` locations come on top).
OWN_PROCESS = ("memory", "environ", "proc_environ", "argv", "proc_cmdline")
#: What a scheduler's environment holds and a worker needs none of.
SCHEDULER_SECRETS = (
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
)


def supervisor_command(supervisor: str, workload_path: Path) -> list[str]:
    """How a worker hands the workload file to this supervisor, as root without
    ``CAP_SYS_PTRACE`` (an unprivileged user has no capability to drop)."""
    if supervisor == "airflow":
        module = "airflow.sdk.execution_time.execute_workload"
        command = [str(VENV_BIN / "python"), "-m", module, "--json-path", str(workload_path)]
    else:
        command = [str(VENV_BIN / "supervise"), str(workload_path)]
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", *command]


def fingerprint(value: str) -> dict[str, Any]:
    """What the probe gets to recognise ``value`` by, without holding it."""
    data = value.encode()
    return {"start": value[:8], "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def sha256(value: str) -> str:
    """The hex SHA-256 of ``value``, as the probe reports what it finds."""
    return hashlib.sha256(value.encode()).hexdigest()


def canary_jwt() -> str:
    """A JWT-shaped string no server signed, put where the task must find it."""
    parts = (b'{"alg":"HS512","typ":"JWT"}', b'{"sub":"probe-canary"}', os.urandom(64))
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in parts)


def scheduler_secrets(airflow: Airflow) -> dict[str, str]:
    """The scheduler's secrets, as an executor sharing its environment would pass them on."""
    return {
        "AIRFLOW__API_AUTH__JWT_SECRET": airflow.env["AIRFLOW__API_AUTH__JWT_SECRET"],
        # Not the session's own URL: that is the default Airflow derives from AIRFLOW_HOME
        # (and the airflow.cfg there names it), so any task's configuration holds it anyway.
        # SQLite, as Airflow's own supervisor builds an engine from it (and has no driver for
        # PostgreSQL here); unguessable, like a URL with a password.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"sqlite:////nonexistent/scheduler-{secrets.token_hex(16)}/airflow.db"
        ),
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


@dataclass
class Hunt:
    """What the probe task reported, and what the test knows that the task was not told."""

    report: dict[str, Any]
    workload: dict[str, Any]
    workload_path: Path
    canary: str

    @property
    def token(self) -> str:
        """The workload's JWT, as Airflow minted it for this try."""
        return str(self.workload["token"])

    @property
    def own_process(self) -> list[str]:
        """The locations in the task's own process that the probe read."""
        fds = [location for location in self.report["read"] if location.startswith("fd:")]
        return [*OWN_PROCESS, *fds]

    def jwts(self, *locations: str) -> set[str]:
        """Digests of the JWT-shaped strings found in ``locations``."""
        found = self.report["jwts"]
        return {jwt["sha256"] for location in locations for jwt in found.get(location, [])}

    def found(self, label: str) -> set[str]:
        """Where the value fingerprinted as ``label`` was found."""
        return set(self.report["found"].get(label, []))


def hunt(airflow: Airflow, supervisor: str, tmp_path: Path) -> Hunt:
    """Queue the probe task, run it under ``supervisor``, and return its report."""
    run_id = f"probe__{uuid.uuid4().hex}"
    tasks = {TASK_ID: {"max_tries": 0}}
    queued = airflow.side.call("queue", dag_id=DAG_ID, run_id=run_id, tasks=tasks)
    workload = queued["workloads"][TASK_ID]
    workload_path = tmp_path / "workload.json"
    workload_path.write_text(json.dumps(workload))
    canary = canary_jwt()
    scheduler = scheduler_secrets(airflow)
    fingerprints = {
        "canary": fingerprint(canary),
        "run_id": fingerprint(run_id),  # the task learns it from its supervisor only
        **{name: fingerprint(value) for name, value in scheduler.items()},
    }
    env = {
        **airflow.worker_env,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **scheduler,
        "PROBE_CANARY": canary,
        "PROBE_FINGERPRINTS": json.dumps(fingerprints),
    }
    command = supervisor_command(supervisor, workload_path)
    ran = subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    log = airflow.log_folder / workload["log_path"]
    assert ran.returncode == 0, (
        f"{command} exited {ran.returncode}\nenv: {sorted(env)}\nstderr: {ran.stderr[-4000:]}\n"
        f"task log {log}:\n{log.read_text()[-4000:] if log.exists() else '(none)'}"
    )
    xcom = airflow.rest.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries/return_value"
    )
    assert xcom.status_code == 200, xcom.text
    return Hunt(xcom.json()["value"], workload, workload_path, canary)


def assert_the_search_sees_what_is_there(found: Hunt) -> None:
    """Positive controls: an empty search means the data is not there, not a blind search."""
    assert found.report["read"]["memory"] > 50_000_000  # the whole runner, Airflow included
    for location in ("memory", "environ"):
        assert sha256(found.canary) in found.jwts(location), location
    assert {"memory", "environ"} <= found.found("canary")
    assert "memory" in found.found("run_id")
    assert found.report["cap_sys_ptrace"] is False


def test_dag_task_under_supervise_finds_no_token_and_no_scheduler_secret(
    airflow: Airflow, tmp_path: Path
) -> None:
    found = hunt(airflow, "taskvisor", tmp_path)

    assert_the_search_sees_what_is_there(found)
    report = found.report
    # Its own process holds no JWT but the canary: neither the workload's token nor the
    # execution token /run returned (which this test never sees).
    assert found.jwts(*found.own_process) == {sha256(found.canary)}
    # supervise started again without the scheduler's secrets before it forked the task:
    # not in its memory, environment or argv, nor in its supervisor's environment.
    for name in SCHEDULER_SECRETS:
        assert found.found(name) == set(), name
        for location, names in report["environ_names"].items():
            assert name not in names, location
    # Its fds: the runner's channel (a socket), pipes, and /dev/null as stdin; no file.
    fds = dict(report["fds"])
    assert fds.pop("0").startswith("socket:")
    assert all(target.startswith("pipe:") or target == "/dev/null" for target in fds.values())
    # The supervisor is not dumpable: its memory is closed to the task. (Its environ is open
    # to a root task on this kernel, and holds neither token nor secret.)
    assert report["errors"]["parent_mem"] == "EACCES"
    assert found.jwts("parent_environ", "parent_cmdline") <= {sha256(found.canary)}
    # What supervise cannot hide from a task of its own user: the workload file named on its
    # command line (`supervise -` and --delete-activity leave none: tests/security).
    assert str(found.workload_path) in report["cmdlines"]["parent"]
    assert found.jwts(f"file:{found.workload_path}") == {sha256(found.token)}


def test_dag_task_under_airflows_own_supervisor_finds_the_token_and_scheduler_secrets(
    airflow: Airflow, tmp_path: Path
) -> None:
    found = hunt(airflow, "airflow", tmp_path)

    assert_the_search_sees_what_is_there(found)
    report = found.report
    # The runner is forked from the process that read the workload: its memory is a copy.
    token = {"sha256": sha256(found.token), "sub": found.workload["ti"]["id"], "scope": "workload"}
    assert token in [{key: jwt[key] for key in token} for jwt in report["jwts"]["memory"]]
    assert found.jwts("memory") == {sha256(found.canary), sha256(found.token)}
    # The scheduler's secrets are passed on: in os.environ and memory; the database URL in
    # memory only (Airflow's supervisor, in the forked child, sets os.environ's copy to
    # airflow-db-not-allowed:///).
    assert found.found("AIRFLOW__API_AUTH__JWT_SECRET") == {"environ", "memory"}
    assert found.found("AIRFLOW__CORE__FERNET_KEY") == {"environ", "memory"}
    assert found.found("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == {"memory"}
    # Airflow's supervisor is not dumpable either; its process titles (setproctitle) hide the
    # workload file's path and blank the environ both processes started with.
    assert report["errors"]["parent_mem"] == "EACCES"
    assert report["cmdlines"]["parent"] == [f"airflow supervisor: {found.workload['ti']['id']}"]
    assert not any(location.startswith("file:") for location in report["read"])
    assert report["environ_names"]["proc_environ"] == []
