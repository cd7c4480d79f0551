"""Scenario 20: supervise's own stdout and stderr break (a closed pipe, a full disk, no fd).

They are a convenience copy for the executor; the task log and the server hold the try. A
failing write to them must never change the try: the state is reported (or kept on disk,
exit 4) and the exit code follows the README's table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from faultkit import FAST_TIMINGS, REPO, Try, TryFactory

from apiserver.testing import ReferenceServer

#: How an executor's shell may wire supervise's outputs, as a user would write it.
BROKEN_OUTPUTS = {
    "pipe closed after one line": "{cmd} 2>&1 | head -1 >/dev/null; exit ${{PIPESTATUS[0]}}",
    "stderr on a full disk": "{cmd} 2>/dev/full",
    "stderr and stdout closed": "{cmd} 2>&- >&-",
}
WIRINGS = sorted(BROKEN_OUTPUTS)


def _start_with_broken_outputs(
    t: Try, wiring: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = f"{sys.executable} -m supervisor {t.activity}"
    t.process = subprocess.Popen(
        ["bash", "-c", BROKEN_OUTPUTS[wiring].format(cmd=cmd)],
        cwd=REPO,
        env={**os.environ, **FAST_TIMINGS, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return t.process


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize(
    ("task", "state", "exit_code"), [("marks_ran", "success", 0), ("raises", "failed", 1)]
)
def test_20_broken_outputs_of_supervise_change_neither_the_state_nor_the_exit_code(
    new_try: TryFactory, wiring: str, task: str, state: str, exit_code: int
) -> None:
    t = new_try(task)

    proc = _start_with_broken_outputs(t, wiring)

    assert proc.wait(timeout=60) == exit_code
    assert t.state() == state
    finished = t.finished_record()
    assert finished["final_state"] == state
    assert finished["exit_code"] == exit_code


@pytest.mark.parametrize("wiring", WIRINGS)
def test_20_broken_outputs_of_supervise_still_keep_an_unreported_state_on_disk_exit_4(
    own_try: TryFactory, own_server: ReferenceServer, wiring: str
) -> None:
    t = own_try("waits")
    proc = _start_with_broken_outputs(t, wiring, {"TASKVISOR_STATE_RETRY_BUDGET": "1"})
    t.wait_for_file("ready")
    own_server.stop()
    t.release()

    assert proc.wait(timeout=60) == 4
    kept = json.loads(t.log_path.with_name(t.log_path.name + ".state.json").read_text())
    assert kept["state"] == "success"
    assert t.finished_record()["exit_code"] == 4
    t.assert_no_task_process_left()
