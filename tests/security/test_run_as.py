"""Property 2: ``run_as`` runs the task as another OS user, and the supervisor keeps the rest.

The supervisor runs as root; the task as ``nobody``. Activity files and task logs live in a
world-readable directory, so only their own modes (0600, owned by root) protect them: the
test does not pass merely because a parent directory is closed.
"""

from __future__ import annotations

import json
import os
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
    supervise,
)

from apiserver.testing import ReferenceServer


@pytest.fixture
def shared(scratch: MakeDir) -> Path:
    """Activities and logs of several tries, side by side, in an open directory."""
    return scratch(mode=0o755)


def test_task_runs_as_the_user_with_its_groups_and_reads_none_of_the_supervisors_files(
    server: ReferenceServer, shared: Path, scratch: MakeDir
) -> None:
    # An earlier try left its activity and log next to ours.
    _, earlier = server.create_task(
        entrypoint="examples/demo_task.py:main",
        activity_path=shared / "earlier.json",
        log_path=shared / "earlier.log",
    )
    assert supervise(earlier).returncode in (0, 1)
    out = scratch(NOBODY)
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:run_as_snoop",
        run_as="nobody",
        env={"PROBE_OUT": str(out), "PROBE_ACTIVITY": "", "PROBE_LOG_DIR": str(shared)},
        activity_path=shared / "activity.json",
        log_path=shared / "task.log",
    )
    document = json.loads(activity.read_text())
    document["env"]["PROBE_ACTIVITY"] = str(activity)
    activity.write_text(json.dumps(document))
    os.chmod(activity, 0o600)

    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    report = Evidence(out).report
    assert report["uid"] == NOBODY.pw_uid
    assert report["gid"] == NOBODY.pw_gid
    assert sorted(report["groups"]) == sorted(os.getgrouplist("nobody", NOBODY.pw_gid))
    assert 0 not in report["groups"]
    # It could list the directory, and read nothing in it.
    assert set(report["log_dir_listing"]) >= {
        "activity.json",
        "earlier.json",
        "earlier.log",
        "task.log",
    }
    for name in report["log_dir_listing"]:
        assert report["errors"][f"log_dir/{name}"] == "EACCES", name
    assert report["errors"]["activity"] == "EACCES"
    # The supervisor (root) wrote the log, with the task's own output in it.
    log = shared / "task.log"
    assert log.stat().st_uid == 0
    assert (log.stat().st_mode & 0o777) == 0o600
    records = log_records(log)
    assert {"event": "run_as probe wrote this line", "logger": "task.stdout"}.items() <= next(
        r for r in records if r["logger"] == "task.stdout"
    ).items()
    ti = server.admin.get_task_instance(ti_id)
    assert ti.state == "success"
    assert ti.unixname == "nobody"


def test_unknown_user_is_a_usage_error_and_nothing_is_contacted(
    server: ReferenceServer, shared: Path
) -> None:
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:run_as_snoop",
        run_as="no-such-user-taskvisor",
        activity_path=shared / "activity.json",
        log_path=shared / "task.log",
    )
    result = supervise(activity)
    assert result.returncode == 2
    assert "$.run_as" in result.stderr
    assert "no such user 'no-such-user-taskvisor'" in result.stderr
    assert "Traceback" not in result.stderr
    ti = server.admin.get_task_instance(ti_id)
    assert (ti.state, ti.hostname, ti.pid, ti.heartbeat_count) == ("queued", None, None, 0)
    assert not (shared / "task.log").exists()


def test_run_as_needs_a_root_supervisor(server: ReferenceServer, scratch: MakeDir) -> None:
    logs = scratch(NOBODY)
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:run_as_snoop", run_as="root", log_path=logs / "task.log"
    )
    document = activity.read_bytes()
    result = supervise("-", stdin=document, user=NOBODY)
    assert result.returncode == 2
    assert "needs supervise to run as root" in result.stderr
    assert server.admin.get_task_instance(ti_id).state == "queued"
