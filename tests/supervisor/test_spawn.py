"""supervisor.spawn: the zygote forked early, launched or abandoned.

These tests fork the test process itself (as ``supervise`` does); the zygote never returns
into pytest: it exits or execs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.spawn import LAUNCH_FAILED, Launch, Zygote, fork_zygote

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # upper bound on a loaded machine; every wait ends on an event
PATH_ONLY = {"PATH": "/usr/bin:/bin"}


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        assert select.select([fd], [], [], WAIT)[0], "no output and no EOF in time"
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def wait_exit(pid: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        assert select.select([pidfd], [], [], WAIT)[0], "the zygote did not exit in time"
    finally:
        os.close(pidfd)
    _, raw = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(raw)


@pytest.fixture
def zygotes() -> Iterator[Callable[[], Zygote]]:
    """Fork zygotes; whatever a test did, each is killed, reaped and its fds closed."""
    made: list[Zygote] = []

    def make() -> Zygote:
        made.append(fork_zygote())
        return made[-1]

    yield make
    for z in made:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(z.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(z.pid, 0)
        for fd in (z.to_task, z.from_task, z.stdout, z.stderr, z.control):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def zygote(zygotes) -> Zygote:
    return zygotes()


def run(z: Zygote, launch: Launch, stdin: bytes = b"") -> tuple[int, bytes, bytes, bytes]:
    """Launch, feed the channel, and return (exit code, channel out, stderr, stdout pipe)."""
    z.launch(launch)
    if stdin:
        os.write(z.to_task, stdin)
    os.close(z.to_task)
    channel = read_all(z.from_task)
    stderr = read_all(z.stderr)
    stdout = read_all(z.stdout)
    return wait_exit(z.pid), channel, stderr, stdout


def test_abandoned_zygote_exits_0_without_running_anything(zygote):
    zygote.abandon()
    os.close(zygote.to_task)
    assert wait_exit(zygote.pid) == 0
    assert read_all(zygote.from_task) == b""
    assert read_all(zygote.stderr) == b""
    assert read_all(zygote.stdout) == b""


def test_zygote_waits_for_its_launch(zygote):
    pidfd = os.pidfd_open(zygote.pid)
    try:
        assert not select.select([pidfd], [], [], 0.05)[0]
    finally:
        os.close(pidfd)
    zygote.abandon()
    assert wait_exit(zygote.pid) == 0


def test_command_gets_the_channel_on_fd_0_and_1_and_its_stderr_on_fd_2(zygote):
    script = 'read line; echo "got:$line"; echo "to stderr" >&2'
    code, channel, stderr, stdout = run(
        zygote, Launch(kind="command", argv=["/bin/sh", "-c", script], env=PATH_ONLY), b"hello\n"
    )
    assert code == 0
    assert channel == b"got:hello\n"
    assert stderr == b"to stderr\n"
    assert stdout == b""  # a command task has no separate stdout pipe


def test_command_environment_is_exactly_the_given_one(zygote):
    env = {"ALPHA": "1", "BETA": "two words", "PATH": "/usr/bin:/bin"}
    code, channel, _, _ = run(zygote, Launch(kind="command", argv=["/usr/bin/env"], env=env))
    assert code == 0
    assert sorted(channel.decode().splitlines()) == [
        "ALPHA=1",
        "BETA=two words",
        "PATH=/usr/bin:/bin",
    ]


def test_command_is_found_on_the_given_path(zygote):
    code, channel, _, _ = run(zygote, Launch(kind="command", argv=["echo", "hi"], env=PATH_ONLY))
    assert (code, channel) == (0, b"hi\n")


@pytest.mark.parametrize("program", ["/nonexistent/program", "no-such-program-taskvisor"])
def test_unknown_program_exits_127_with_a_message_on_stderr(zygote, program):
    code, channel, stderr, _ = run(zygote, Launch(kind="command", argv=[program], env=PATH_ONLY))
    assert code == LAUNCH_FAILED == 127
    assert channel == b""
    assert f"cannot execute {program!r}".encode() in stderr


def test_command_runs_in_its_own_process_group(zygote):
    code, channel, _, _ = run(
        zygote,
        Launch(
            kind="command",
            argv=[
                sys.executable,
                "-c",
                "import os; print(os.getpgid(0), os.getpid(), os.getsid(0))",
            ],
        ),
    )
    assert code == 0
    pgid, pid, sid = map(int, channel.split())
    assert pgid == pid == zygote.pid
    assert pgid != os.getpgid(0)
    assert sid == os.getsid(0)  # same session: only the group is its own


def test_command_inherits_no_fd_beyond_0_1_2(zygote):
    extra = os.open(os.devnull, os.O_RDONLY)  # no O_CLOEXEC: would leak without the sweep
    os.set_inheritable(extra, True)
    try:
        check = (
            "import os\n"
            "for fd in range(3, 1024):\n"
            "    try: os.fstat(fd)\n"
            "    except OSError: continue\n"
            "    print(fd)\n"
        )
        code, channel, stderr, _ = run(
            zygote, Launch(kind="command", argv=[sys.executable, "-c", check])
        )
    finally:
        os.close(extra)
    assert code == 0, stderr
    assert channel == b""


def test_command_starts_with_default_signal_dispositions_and_an_empty_mask(zygotes):
    old_handler = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        z = zygotes()
    finally:
        signal.signal(signal.SIGUSR1, old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    argv = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]
    code, channel, _, _ = run(z, Launch(kind="command", argv=argv, env=PATH_ONLY))
    assert code == 0
    masks = dict(line.split(":\t") for line in channel.decode().splitlines())
    assert int(masks["SigIgn"], 16) & (1 << (signal.SIGUSR1 - 1)) == 0
    assert int(masks["SigBlk"], 16) == 0


def test_command_exit_code_is_the_zygotes_exit_code(zygote):
    code, *_ = run(zygote, Launch(kind="command", argv=["/bin/sh", "-c", "exit 7"], env=PATH_ONLY))
    assert code == 7


def test_command_runs_in_the_given_working_directory(zygote, tmp_path):
    launch = Launch(kind="command", argv=["pwd"], env=PATH_ONLY, cwd=str(tmp_path))
    code, channel, _, _ = run(zygote, launch)
    assert (code, channel.decode().strip()) == (0, str(tmp_path))


def test_command_runs_as_the_requested_user_or_fails_clearly_without_root(zygote):
    nobody = pwd.getpwnam("nobody")
    launch = Launch(
        kind="command",
        argv=["id", "-u"],
        env=PATH_ONLY,
        uid=nobody.pw_uid,
        gid=nobody.pw_gid,
        groups=[nobody.pw_gid],
    )
    code, channel, stderr, _ = run(zygote, launch)
    if os.geteuid() == 0:
        assert (code, channel.decode().strip()) == (0, str(nobody.pw_uid))
    else:  # only root may switch users: the zygote says so and never runs the command
        assert code == LAUNCH_FAILED
        assert channel == b""
        assert b"could not start the task" in stderr


def test_the_supervisor_keeps_no_descriptor_of_a_finished_zygote():
    before = set(os.listdir("/proc/self/fd"))
    z = fork_zygote()
    z.launch(Launch(kind="command", argv=["true"], env=PATH_ONLY))
    assert wait_exit(z.pid) == 0
    for fd in (z.to_task, z.from_task, z.stdout, z.stderr):
        os.close(fd)
    assert set(os.listdir("/proc/self/fd")) == before


ORPHAN_SCRIPT = """
import os, sys
from supervisor.spawn import Launch, fork_zygote
z = fork_zygote()
started = sys.argv[1] == "after-the-task-started"
# A task that writes nothing, so only the parent-death signal can end it (a write to the
# channel after the supervisor died would end it by SIGPIPE instead).
argv = ["sh", "-c", "echo started; exec sleep 60"] if started else ["sleep", "60"]
z.launch(Launch(kind="command", argv=argv, env={"PATH": "/usr/bin:/bin"}))
if started:
    assert os.read(z.from_task, 64) == b"started\\n"
print(z.pid, flush=True)
os._exit(0)  # the supervisor dies without stopping its task
"""


@pytest.mark.parametrize("moment", ["after-the-task-started", "right-after-the-launch"])
def test_task_is_killed_when_its_supervisor_dies(moment):
    result = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, moment],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    task = int(result.stdout)
    try:
        pidfd = os.pidfd_open(task)
    except ProcessLookupError:
        return  # already gone and reaped: killed as required
    try:
        assert select.select([pidfd], [], [], WAIT)[0], "the task outlived its supervisor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(task, signal.SIGKILL)  # never leave it behind, whatever the outcome
        os.close(pidfd)
