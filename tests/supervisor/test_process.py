"""supervisor.process: exit from a pidfd, group signals, and the sweep of escaped descendants.

Every test drives real processes. The sweep makes its caller a child subreaper, which cannot
be undone, so those scenarios run in a separate Python process (``SWEEP_SCRIPT``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.process import ExitStatus, TaskProcess

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # upper bound on a loaded machine; every wait below ends on an event


def spawn(code: str, *, stdout: int | None = None) -> int:
    """Start ``python -c code`` as the leader of a new process group (like the task child)."""
    actions = [(os.POSIX_SPAWN_DUP2, stdout, 1)] if stdout is not None else []
    return os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", code],
        dict(os.environ),
        setpgroup=0,
        file_actions=actions,
    )


def readable(fd: int, timeout: float = WAIT) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def pid_gone(pid: int, timeout: float = WAIT) -> bool:
    """True once ``pid`` has terminated (a pidfd becomes readable at exit)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return readable(fd, timeout)
    finally:
        os.close(fd)


@pytest.fixture
def processes() -> Iterator[list[TaskProcess]]:
    """TaskProcesses to clean up: killed and reaped whatever the test did."""
    made: list[TaskProcess] = []
    yield made
    for proc in made:
        if proc.status is None:
            proc.signal_group(signal.SIGKILL)
            if readable(proc.pidfd):
                proc.poll()
        proc.close()


def test_exit_is_detected_from_the_pidfd_with_its_exit_code(processes):
    release_r, release_w = os.pipe()
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", "import os, sys; os.read(0, 1); sys.exit(3)"],
        dict(os.environ),
        setpgroup=0,
        file_actions=[(os.POSIX_SPAWN_DUP2, release_r, 0), (os.POSIX_SPAWN_CLOSE, release_w)],
    )
    os.close(release_r)
    proc = TaskProcess(pid)
    processes.append(proc)
    assert not readable(proc.pidfd, 0)
    assert proc.poll() is None
    os.close(release_w)  # EOF on the child's stdin: it exits 3
    assert readable(proc.pidfd)
    assert proc.poll() == ExitStatus(code=3)
    assert proc.poll() == ExitStatus(code=3)  # reaped once, remembered


def test_clean_exit_is_code_0(processes):
    proc = TaskProcess(spawn("pass"))
    processes.append(proc)
    assert readable(proc.pidfd)
    status = proc.poll()
    assert status == ExitStatus(code=0)
    assert status.clean


def test_exit_is_decided_by_the_process_not_by_pipe_eof(processes):
    # The child closes its stdout at once but keeps running: the pidfd must not be readable.
    out_r, out_w = os.pipe()
    pid = spawn("import os, time; os.close(1); time.sleep(60)", stdout=out_w)
    os.close(out_w)
    proc = TaskProcess(pid)
    processes.append(proc)
    assert os.read(out_r, 1) == b""  # EOF on its stdout
    os.close(out_r)
    assert not readable(proc.pidfd, 0.05)
    assert proc.poll() is None


def test_signal_group_reaches_the_process_and_its_status_names_the_signal(processes):
    ready_r, ready_w = os.pipe()
    pid = spawn("import os, time; os.write(1, b'ready'); time.sleep(60)", stdout=ready_w)
    os.close(ready_w)
    proc = TaskProcess(pid)
    processes.append(proc)
    assert os.read(ready_r, 5) == b"ready"
    os.close(ready_r)
    proc.signal_group(signal.SIGTERM)
    assert readable(proc.pidfd)
    status = proc.poll()
    assert status == ExitStatus(signal=signal.SIGTERM)
    assert status.describe() == "killed by SIGTERM"
    assert not status.clean


def test_death_by_a_real_time_signal_is_described_not_raised(processes):
    rt_signal = signal.SIGRTMIN + 6  # no name in signal.Signals
    proc = TaskProcess(spawn(f"import os; os.kill(os.getpid(), {int(rt_signal)})"))
    processes.append(proc)
    assert readable(proc.pidfd)
    status = proc.poll()
    assert status == ExitStatus(signal=int(rt_signal))
    assert str(int(rt_signal)) in status.describe() or "SIGRTMIN+6" in status.describe()


def test_signal_group_reaches_a_grandchild_in_the_same_group(processes):
    out_r, out_w = os.pipe()
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "os.write(1, f'{child.pid}\\n'.encode())\n"
        "time.sleep(60)\n"
    )
    pid = spawn(code, stdout=out_w)
    os.close(out_w)
    proc = TaskProcess(pid)
    processes.append(proc)
    grandchild = int(os.read(out_r, 64).decode())
    os.close(out_r)
    assert os.getpgid(grandchild) == pid
    proc.signal_group(signal.SIGKILL)
    assert pid_gone(grandchild)
    assert readable(proc.pidfd)
    assert proc.poll() == ExitStatus(signal=signal.SIGKILL)


def test_signal_group_after_exit_is_harmless(processes):
    proc = TaskProcess(spawn("pass"))
    processes.append(proc)
    assert readable(proc.pidfd)
    proc.poll()
    proc.signal_group(signal.SIGKILL)  # no such group any more: no error


def test_status_reaped_by_someone_else_is_unknown_not_success(processes):
    pid = spawn("pass")
    proc = TaskProcess(pid)
    processes.append(proc)
    os.waitpid(pid, 0)  # e.g. an inherited SIGCHLD handler got there first
    status = proc.poll()
    assert status == ExitStatus(code=None, signal=None)
    assert not status.clean
    assert "unknown exit status" in status.describe()


def test_a_descendant_vanishing_while_listed_does_not_hide_the_others(processes):
    survivor = TaskProcess(spawn("import time; time.sleep(60)"))
    processes.append(survivor)
    alive = psutil.Process(survivor.pid)

    class Vanished:
        pid = 999_999_999

        def status(self):
            raise psutil.NoSuchProcess(self.pid)

    class Me:
        def children(self, recursive):
            return [Vanished(), alive]

    survivor._me = Me()
    # A process reaped between listing and inspection must not make the sweep believe the
    # whole tree is gone (kill_tree_and_reap would stop killing while others still run).
    assert [p.pid for p in survivor.descendants()] == [survivor.pid]


SWEEP_SCRIPT = r"""
import json, os, sys, time
import psutil
from supervisor._linux import set_child_subreaper
from supervisor.process import TaskProcess

leader_exits_first = sys.argv[1] == "leader-exits-first"
set_child_subreaper()
r, w = os.pipe()
child_code = (
    "import os, subprocess, sys, time\n"
    "g = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
    "os.write(1, f'{g.pid}\\n'.encode())\n"
    + ("sys.exit(0)\n" if leader_exits_first else "time.sleep(60)\n")
)
pid = os.posix_spawn(sys.executable, [sys.executable, "-c", child_code], dict(os.environ),
                     setpgroup=0, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
os.close(w)
proc = TaskProcess(pid)
grandchild = int(os.read(r, 64).decode())
escaped = os.getpgid(grandchild) != pid and os.getsid(grandchild) == grandchild
if leader_exits_first:
    os.waitid(os.P_PIDFD, proc.pidfd, os.WEXITED | os.WNOWAIT)
left = proc.kill_tree_and_reap(time.monotonic() + 10)
status = proc.status
print(json.dumps({
    "escaped": escaped,
    "grandchild": grandchild,
    "left": left,
    "code": status.code if status else "none",
    "signal": status.signal if status else "none",
    "grandchild_exists": psutil.pid_exists(grandchild),
    "children_left": [p.pid for p in psutil.Process().children(recursive=True)],
}))
"""


@pytest.mark.parametrize("scenario", ["leader-running", "leader-exits-first"])
def test_kill_tree_and_reap_kills_and_reaps_a_grandchild_that_escaped_with_setsid(scenario):
    result = subprocess.run(
        [sys.executable, "-c", SWEEP_SCRIPT, scenario],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["escaped"], "the grandchild must have left the task's group and session"
    assert report["left"] == []
    assert report["children_left"] == []
    assert report["grandchild_exists"] is False
    if scenario == "leader-exits-first":
        assert (report["code"], report["signal"]) == (0, None)
    else:
        assert (report["code"], report["signal"]) == (None, signal.SIGKILL)
