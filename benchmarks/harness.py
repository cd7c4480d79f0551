"""Running ``supervise`` for a benchmark: the reference server, activities, timing, memory.

:class:`Bench` owns one :class:`~apiserver.testing.ReferenceServer` for the whole run and
creates a fresh queued task instance for every ``supervise`` run (a task instance runs once).
Start-to-exit is timed around ``Popen`` ... ``wait``, exactly as an executor would see it.
Peak memory is ``VmHWM`` from ``/proc/<pid>/status``, polled every millisecond for the
supervisor and for its task child (the supervisor's only child), in separate runs from the
timed ones so that polling never slows a timed run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiserver.testing import ReferenceServer
from benchmarks.procfs import children_of, pss_kib, status_kib

__all__ = [
    "BENCH_DIR",
    "REPO",
    "TASKS",
    "Bench",
    "HeartbeatRecorder",
    "PeakSampler",
    "Run",
    "recorded_server",
    "supervise_argv",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TASKS = BENCH_DIR / "tasks.py"
SUPERVISE_TIMEOUT = 300.0


def supervise_argv(activity: Path, *flags: str) -> list[str]:
    """The command an executor runs: the ``supervise`` console script next to this Python."""
    script = Path(sys.executable).with_name("supervise")
    if script.exists():
        return [str(script), *flags, str(activity)]
    return [sys.executable, "-m", "supervisor", *flags, str(activity)]


def supervised_seconds(log_path: Path) -> float:
    """The supervisor's own ``duration`` from its "Task finished" record: from "Starting
    task" (interpreter start-up, imports and activity parsing done) to the outcome reported."""
    for line in reversed(log_path.read_text().splitlines()):
        record = json.loads(line)
        if record.get("event") == "Task finished":
            return float(record["duration"])
    raise RuntimeError(f"no 'Task finished' record in {log_path}")


@dataclass
class Run:
    """One ``supervise`` run: wall seconds from spawn to exit, exit code, peak memory (KiB)."""

    seconds: float
    exit_code: int
    activity: Path
    log_path: Path
    #: CPU seconds (user + system) of the supervisor and the task child it reaped.
    cpu_seconds: float = 0.0
    supervisor_hwm_kib: int | None = None
    child_hwm_kib: int | None = None

    def result(self) -> Any:
        """What the task wrote to ``BENCH_OUT`` (see :mod:`benchmarks.tasks`)."""
        return json.loads(self.activity.with_suffix(".out.json").read_text())

    def log_records(self) -> list[dict[str, Any]]:
        """The task log, decoded."""
        with self.log_path.open("rb") as f:
            return [json.loads(line) for line in f]


class PeakSampler(threading.Thread):
    """Polls VmHWM of a supervisor and of its first child until the supervisor is gone
    (set ``done`` and join to stop it earlier); the peaks, in KiB, are ``supervisor`` and
    ``child``. With ``pss``, also the largest PSS of the two together seen (``pair_pss``:
    pages they share counted once, where each one's RSS counts them in full)."""

    def __init__(self, pid: int, *, pss: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.supervisor = 0
        self.child = 0
        self.pair_pss = 0
        self._pss = pss
        self.done = threading.Event()

    def run(self) -> None:
        child: int | None = None
        while not self.done.is_set():
            hwm = status_kib(self.pid, "VmHWM")
            if hwm is None:
                return
            self.supervisor = max(self.supervisor, hwm)
            if child is None:
                kids = children_of(self.pid)
                child = kids[0] if kids else None
            if child is not None:
                self.child = max(self.child, status_kib(child, "VmHWM") or 0)
            if self._pss:
                pair = pss_kib(self.pid) or 0
                if child is not None:
                    pair += pss_kib(child) or 0
                self.pair_pss = max(self.pair_pss, pair)
            time.sleep(0.001)


class Bench:
    """The reference server and a work directory shared by every benchmark of a run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = ReferenceServer(workdir=workdir / "server")
        self._count = 0

    def __enter__(self) -> Bench:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(None, None, None)

    def activity(
        self,
        task: str,
        *,
        env: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Path:
        """A fresh queued task instance running ``benchmarks/tasks.py:<task>``; its activity."""
        self._count += 1
        path = self.workdir / "activities" / f"{self._count:05d}-{task}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        env = {"BENCH_OUT": str(path.with_suffix(".out.json")), **(env or {})}
        self.server.create_task(
            entrypoint=f"{TASKS}:{task}",
            context=context,
            env=env,
            activity_path=path,
            log_path=path.with_suffix(".log"),
            dag_id="bench",
            task_id=task,
        )
        return path

    def start(self, activity: Path, flags: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start ``supervise`` on ``activity`` (its own stderr goes next to the activity)."""
        with activity.with_suffix(".stderr").open("wb") as err:
            return subprocess.Popen(
                supervise_argv(activity, *flags),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=_supervisor_env(),
            )

    def run(self, activity: Path, flags: Sequence[str] = (), *, peak: bool = False) -> Run:
        """Run ``supervise`` to the end; with ``peak``, also sample its memory (not timed)."""
        t0 = time.perf_counter()
        proc = self.start(activity, flags)
        sampler = None
        if peak:
            sampler = PeakSampler(proc.pid)
            sampler.start()
        watchdog = threading.Timer(SUPERVISE_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - t0
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        run = Run(
            seconds, code, activity, activity.with_suffix(".log"), usage.ru_utime + usage.ru_stime
        )
        if sampler is not None:
            sampler.done.set()
            sampler.join()
            run.supervisor_hwm_kib, run.child_hwm_kib = sampler.supervisor, sampler.child
        if code != 0:
            err = activity.with_suffix(".stderr").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"supervise {activity.name} exited {code}:\n{err}")
        return run


def _supervisor_env() -> dict[str, str]:
    # Settings come from flags only: a TASKVISOR_* left in the caller's shell must not leak in.
    return {k: v for k, v in os.environ.items() if not k.startswith("TASKVISOR_")}


class HeartbeatRecorder:
    """A loopback TCP relay in front of the server that notes when each heartbeat request
    starts (``time.time()``): what the supervisor sent and when, whatever the server does."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.heartbeats: list[float] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while chunk := src.recv(1 << 20):
                if to_server and b"/heartbeat HTTP/1.1\r\n" in chunk:
                    self.heartbeats.append(time.time())
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting (connections in flight end with their peers)."""
        self._closed = True
        self._listener.close()


@contextmanager
def recorded_server(bench: Bench, activity: Path) -> Iterator[HeartbeatRecorder]:
    """Point ``activity`` at a :class:`HeartbeatRecorder` in front of the bench's server."""
    recorder = HeartbeatRecorder(bench.server.port)
    doc = json.loads(activity.read_text())
    doc["server"] = f"http://127.0.0.1:{recorder.port}/execution/"
    activity.write_text(json.dumps(doc))
    try:
        yield recorder
    finally:
        recorder.close()
