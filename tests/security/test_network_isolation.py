"""Property 3: ``isolate_network`` leaves the task only a loopback of its own.

The probe connects straight to the API server's port (what a task holding a stolen token
would do), then makes SDK calls, which travel over its pipes to the supervisor.
"""

from __future__ import annotations

import pytest
from security_harness import (
    NOBODY,
    PROBE,
    MakeDir,
    reference_server,  # noqa: F401 (fixture)
    scratch_dirs,  # noqa: F401 (fixture)
    supervise,
)

from apiserver.testing import ReferenceServer


@pytest.mark.parametrize("run_as", [None, "nobody"])
def test_isolated_task_cannot_reach_the_server_but_its_sdk_calls_work(
    server: ReferenceServer, run_as: str | None
) -> None:
    server.admin.set_variable("net_probe_variable", "through the supervisor")
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:network_probe",
        env={"PROBE_SERVER_PORT": str(server.port)},
        extra_activity={"isolate_network": True},
        run_as=run_as,
    )
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    xcoms = server.admin.xcoms_of(ti_id)
    probe = xcoms["return_value"]
    assert probe["interfaces"] == ["lo"]
    assert probe["direct"] == "ECONNREFUSED"  # nothing listens on the task's own loopback
    assert probe["variable"] == "through the supervisor"
    assert xcoms["pushed_through_supervisor"] == "yes"
    assert server.admin.get_task_instance(ti_id).state == "success"


def test_without_isolation_the_same_probe_reaches_the_server(server: ReferenceServer) -> None:
    # Control: the probe's direct connection does work when nothing stops it.
    server.admin.set_variable("net_probe_variable", "through the supervisor")
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:network_probe", env={"PROBE_SERVER_PORT": str(server.port)}
    )
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    probe = server.admin.xcoms_of(ti_id)["return_value"]
    assert probe["direct"] == "connected"
    assert len(probe["interfaces"]) >= 1


def test_isolation_needs_root(server: ReferenceServer, scratch: MakeDir) -> None:
    # Unprivileged, the namespace cannot be made: the task never runs, the try fails.
    logs = scratch(NOBODY)
    ti_id, activity = server.create_task(
        entrypoint=f"{PROBE}:network_probe",
        env={"PROBE_SERVER_PORT": str(server.port)},
        extra_activity={"isolate_network": True},
        log_path=logs / "task.log",
    )
    result = supervise("-", stdin=activity.read_bytes(), user=NOBODY)
    assert result.returncode == 1, result.stderr
    text = (logs / "task.log").read_text()
    assert "unshare(CLONE_NEWNET)" in text
    assert server.admin.xcoms_of(ti_id) == {}
