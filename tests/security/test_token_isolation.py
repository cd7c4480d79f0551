"""Property 1: the task's token never reaches the task.

A probe task (``tasks/probe.py:token_hunt``) copies everything it can read: its environment
and argv, every fd it holds, every readable mapping of its own memory, the supervisor's
``/proc`` environ, cmdline, status and memory, and the activity file. The test then searches
the copies for the token, every 8-character piece of its signature, and the header all of the
server's tokens share (which also catches the execution token ``/run`` exchanged, which the
test never sees). Positive controls show each search can succeed where the data is there.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from security_harness import (
    NOBODY,
    PROBE,
    Evidence,
    MakeDir,
    log_records,
    reference_server,  # noqa: F401 (fixture)
    scratch_dirs,  # noqa: F401 (fixture)
    search,
    supervise,
)

from apiserver.testing import ReferenceServer

#: Locations inside the task's own process.
OWN_PROCESS = ("environ", "proc_environ", "argv", "proc_cmdline", "self_mem")
#: Shaped like a token, put in the task's environment: the searches must find it.
CANARY = "probe.canary.c2lnbmF0dXJlLW9mLXRoZS1jYW5hcnk"


@pytest.fixture
def out(scratch: MakeDir) -> Path:
    """Where a probe leaves its evidence: writable by the task whatever its user."""
    return scratch(NOBODY)


def token_of(activity: Path) -> str:
    token: str = json.loads(activity.read_bytes())["token"]
    return token


def own_process_locations(ev: Evidence) -> list[str]:
    return [*OWN_PROCESS, *(n for n in ev.names() if n.startswith("fd_"))]


def assert_search_works(ev: Evidence) -> None:
    """The canary the test put in the task's environment shows up in the copies."""
    for location in ("self_mem", "environ"):
        assert "token" in search(ev.read(location), CANARY), location
    assert ev.report["sizes"]["self_mem"] > 10_000_000  # the whole interpreter was read


def assert_inherited_fds_are_only_the_channel_and_stdio(ev: Evidence) -> None:
    fds = ev.report["fds"]
    assert fds.pop("0") == "/dev/null"
    assert all(target.startswith("pipe:") for target in fds.values()), fds
    assert sorted(fds) == ["1", "100", "101", "2"]


def test_same_user_task_finds_no_token_in_its_own_process(
    server: ReferenceServer, out: Path
) -> None:
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:token_hunt", env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY}
    )
    token = token_of(activity)
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    ev = Evidence(out)
    assert_search_works(ev)
    assert_inherited_fds_are_only_the_channel_and_stdio(ev)
    assert ev.findings(token, own_process_locations(ev)) == {}
    assert ev.findings(token, ["supervisor_environ", "supervisor_cmdline"]) == {}
    # What same-user mode cannot protect, and why run_as exists: a task running as the
    # supervisor's user (root here) reads the activity file named on its command line, and
    # root reads the supervisor's memory despite PR_SET_DUMPABLE. These also show the
    # searches find the token where it is.
    hits = ev.findings(token, ["activity_0", "supervisor_mem"])
    assert set(hits) == {"activity_0", "supervisor_mem"}
    assert server.admin.get_task_instance(ti_id).state == "success"


def test_unprivileged_same_user_task_cannot_read_the_non_dumpable_supervisor(
    server: ReferenceServer, out: Path, scratch: MakeDir
) -> None:
    # supervise itself runs as nobody (the task too, same user): only PR_SET_DUMPABLE stands
    # between the task and the supervisor's memory and environment. The activity comes on
    # stdin, so no file holds the token.
    logs = scratch(NOBODY)
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:token_hunt",
        env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY},
        log_path=logs / "task.log",
    )
    document = activity.read_bytes()
    activity.unlink()
    token = json.loads(document)["token"]
    result = supervise("-", stdin=document, user=NOBODY)
    assert result.returncode == 0, result.stderr
    ev = Evidence(out)
    assert ev.report["uid"] == NOBODY.pw_uid
    assert_search_works(ev)
    assert_inherited_fds_are_only_the_channel_and_stdio(ev)
    assert ev.findings(token, own_process_locations(ev)) == {}
    # The supervisor runs as nobody, but its /proc files belong to root: it is not dumpable.
    supervisor = ev.report["supervisor"]
    assert supervisor["uids"] == [NOBODY.pw_uid] * 4
    assert supervisor["proc_owner"] == [0, 0]
    errors = ev.report["errors"]
    assert errors["supervisor_environ"] == "EACCES"
    assert errors["supervisor_mem"] == "EACCES"
    assert ev.report["supervisor_ptrace"] == "EPERM"
    # Control: a dumpable process of the same user is open to the task.
    assert ev.report["peer_mem_opens"] is True
    assert "peer_environ" in ev.names()
    assert ev.report["peer_ptrace"] == "attached"
    assert "supervisor_mem" not in ev.names()
    # What is left readable holds no token: the command line says "-".
    assert ev.read("supervisor_cmdline").split(b"\0")[-2:] == [b"-", b""]
    assert ev.findings(token, ev.names()) == {}
    assert server.admin.get_task_instance(ti_id).state == "success"
    assert (logs / "task.log").stat().st_uid == NOBODY.pw_uid


def test_run_as_task_finds_the_token_nowhere(
    server: ReferenceServer, out: Path, scratch: MakeDir
) -> None:
    # The activity file stays on disk, readable by its owner (root) only; its directory is
    # open, so only the file's own mode protects it.
    shared = scratch(mode=0o755)
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:token_hunt",
        env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY},
        run_as="nobody",
        activity_path=shared / "activity.json",
        log_path=shared / "task.log",
    )
    token = token_of(activity)
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    ev = Evidence(out)
    assert ev.report["uid"] == NOBODY.pw_uid
    assert_search_works(ev)
    assert_inherited_fds_are_only_the_channel_and_stdio(ev)
    errors = ev.report["errors"]
    for location in ("supervisor_environ", "supervisor_mem", "activity_0"):
        assert errors[location] == "EACCES", location
    assert ev.report["supervisor_ptrace"] == "EPERM"
    assert ev.findings(token, ev.names()) == {}
    assert server.admin.get_task_instance(ti_id).state == "success"


def test_delete_activity_removes_the_file_before_the_task_starts(
    server: ReferenceServer, out: Path
) -> None:
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:token_hunt",
        env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY},
    )
    result = supervise(activity, options=["--delete-activity"])
    assert result.returncode == 0, result.stderr
    assert not activity.exists()
    ev = Evidence(out)
    assert ev.report["errors"]["activity_0"] == "ENOENT"
    assert server.admin.get_task_instance(ti_id).state == "success"


def test_activity_on_stdin_leaves_no_file_and_no_path_to_find(
    server: ReferenceServer, out: Path
) -> None:
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:token_hunt",
        env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY},
    )
    document = activity.read_bytes()
    activity.unlink()
    token = json.loads(document)["token"]
    result = supervise("-", stdin=document)
    assert result.returncode == 0, result.stderr
    ev = Evidence(out)
    assert not any(name.startswith("activity") for name in ev.names())
    assert ev.findings(token, [*own_process_locations(ev), "supervisor_cmdline"]) == {}
    assert server.admin.get_task_instance(ti_id).state == "success"


def test_a_token_the_task_prints_is_masked_whole_and_in_part(
    server: ReferenceServer, out: Path
) -> None:
    # Same-user mode, activity left on disk: the task reads the token and prints it.
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:reads_activity_then_prints_its_token",
        env={"PROBE_OUT": str(out)},
    )
    token = token_of(activity)
    log = Path(server.workdir / "logs" / f"{ti_id}.log")
    # The activity path is known to a same-user task anyway (the supervisor's cmdline).
    document = json.loads(activity.read_bytes())
    document["env"]["PROBE_ACTIVITY"] = str(activity)
    activity.write_text(json.dumps(document))
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert search(text.encode(), token) == []
    events = [r["event"] for r in log_records(log)]
    assert "token: ***" in events
    assert "signature: ***" in events
    assert "token on stderr: ***" in events
    assert token not in result.stderr


def test_tokens_stolen_from_supervisor_memory_are_masked_in_the_log(
    server: ReferenceServer, out: Path
) -> None:
    # Same-user root can read the supervisor's memory (see above): whatever tokens it finds
    # there, the workload token and the execution token /run exchanged it for, are masked.
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:prints_tokens_found_in_supervisor_memory",
        env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY},
    )
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    stolen = server.admin.xcoms_of(ti_id)["return_value"]
    assert stolen >= 2  # the workload token and at least one execution token
    records = log_records(Path(server.workdir / "logs" / f"{ti_id}.log"))
    printed = [r["event"] for r in records if r["event"].startswith("stolen token: ")]
    assert len(printed) == stolen
    # The probe's pattern may run on past a copy that no NUL ends (the masker's own buffers)
    # into a few stray base64url bytes: what follows the mask is shorter than any needle.
    for event in printed:
        assert re.fullmatch(r"stolen token: \*\*\*[A-Za-z0-9_-]{0,7}", event), event


def test_an_activity_that_would_hand_the_token_to_the_task_is_refused(
    server: ReferenceServer,
) -> None:
    for field, where in (
        ("env", "$.env.LEAK"),
        ("command", "$.command[1]"),
        ("variable", "$.context.variables.leak"),
        ("connection", "$.context.connections[0].password"),
    ):
        ti_id, activity = server.create_task(command=["sh", "-c", "true"])
        document = json.loads(activity.read_bytes())
        token = document["token"]
        if field == "env":
            document["env"] = {"LEAK": f"Bearer {token}"}
        elif field == "command":
            document["command"] = ["sh", token]
        elif field == "variable":  # pushed values reach the task with StartupDetails
            document["context"] = {"variables": {"leak": token}}
        else:
            conn = {"conn_id": "api", "conn_type": "http", "password": token}
            document["context"] = {"connections": [conn]}
        activity.write_text(json.dumps(document))
        result = supervise(activity)
        assert result.returncode == 2
        assert f"{where}: holds the token, which never reaches the task" in result.stderr
        assert document["token"] not in result.stderr
        assert server.admin.get_task_instance(ti_id).state == "queued"


#: A command task that keeps its whole environment, then ends the try properly.
ENV_DUMP = """
import os, sys
fds = os.listdir("/proc/self/fd")  # the listing's own fd is among them
with open(os.environ["PROBE_OUT"] + "/fds.txt", "w") as f:
    f.write(" ".join(sorted(fds, key=int)))
with open(os.environ["PROBE_OUT"] + "/proc_environ.bin", "wb") as f:
    f.write(open("/proc/self/environ", "rb").read())
sys.stdin.readline()
print('{"type":"Hello","protocol_version":1}', flush=True)
print('{"type":"SucceedTask","id":1}', flush=True)
sys.stdin.readline()
"""

#: What an executor's environment may hold besides supervise's settings.
SUPERVISOR_SECRETS = {
    "TASKVISOR_API_NOTE": "supervisor-setting-31415",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-signing-secret-27182",
}


def test_a_command_task_gets_no_secret_of_supervises_environment_and_no_extra_fd(
    server: ReferenceServer, out: Path
) -> None:
    _ti_id, activity = server.create_task(
        command=[sys.executable, "-c", ENV_DUMP], env={"PROBE_OUT": str(out)}
    )
    token = token_of(activity)
    result = supervise(activity, env={**SUPERVISOR_SECRETS, "EXECUTOR_NOTE": f"t={token}"})
    assert result.returncode == 0, result.stderr
    environ = (out / "proc_environ.bin").read_bytes()
    assert b"PROBE_OUT=" in environ  # the activity's env arrived
    for name, value in SUPERVISOR_SECRETS.items():
        assert value.encode() not in environ, name
    assert b"EXECUTOR_NOTE" not in environ
    assert search(environ, token) == []
    # An exec'd task starts with the channel on 0/1 and its log on 2, nothing else.
    assert (out / "fds.txt").read_text() == "0 1 2 3"


def test_a_forked_python_task_finds_no_signing_secret_of_supervises_environment(
    server: ReferenceServer, out: Path
) -> None:
    # A Python task is a fork of supervise and inherits its memory, including the kernel's
    # copy of the environment (/proc/self/environ, the stack): supervise starts again without
    # *JWT* variables before it forks. Its own settings (TASKVISOR_*) are not secrets: they
    # stay in that copy, out of os.environ.
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:token_hunt", env={"PROBE_OUT": str(out), "PROBE_CANARY": CANARY}
    )
    result = supervise(activity, env=SUPERVISOR_SECRETS)
    assert result.returncode == 0, result.stderr
    ev = Evidence(out)
    assert_search_works(ev)
    jwt_secret = SUPERVISOR_SECRETS["AIRFLOW__API_AUTH__JWT_SECRET"].encode()
    for location in ("environ", "proc_environ", "self_mem"):
        assert jwt_secret not in ev.read(location), location
    setting = SUPERVISOR_SECRETS["TASKVISOR_API_NOTE"].encode()
    assert setting not in ev.read("environ")
    assert setting in ev.read("proc_environ")
    assert server.admin.get_task_instance(ti_id).state == "success"
