"""Helpers of the fault suite: run a real ``supervise`` and inspect everything it left behind.

A :class:`Try` is one task try on a real :class:`~apiserver.testing.ReferenceServer`: its
activity file, its log, a scratch directory the task writes its pids and progress to, and a
marker in the task's environment. Every process of the task inherits the marker, so
:meth:`Try.task_processes` finds them all afterwards, including ones that left the process
group or the session. :class:`FaultProxy` sits between ``supervise`` and the server on
loopback and misbehaves on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from apiserver.testing import ReferenceServer

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
PYTHON_TASKS = TASKS_DIR / "fault_tasks.py"

#: Small timings so the suite stays fast; each test overrides what its scenario is about.
FAST_TIMINGS = {
    "TASKVISOR_HEARTBEAT_INTERVAL": "0.5",
    "TASKVISOR_HEARTBEAT_TOLERANCE": "10",
    "TASKVISOR_KILL_GRACE": "0.5",
    "TASKVISOR_OVERTIME": "1",
    "TASKVISOR_API_RETRY_BUDGET": "3",
    "TASKVISOR_STATE_RETRY_BUDGET": "3",
    "TASKVISOR_API_TIMEOUT": "5",
    "TASKVISOR_DRAIN_TIMEOUT": "1",
}


def entrypoint(name: str) -> str:
    """The ``path/file.py:callable`` of a task in ``tasks/fault_tasks.py``."""
    return f"{PYTHON_TASKS}:{name}"


def command(script: str, *args: str) -> list[str]:
    """A ``command`` running one of the raw-protocol scripts in ``tasks/``."""
    return [sys.executable, str(TASKS_DIR / script), *args]


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Finished:
    """How a ``supervise`` process ended."""

    returncode: int
    duration: float
    stderr: str


@dataclass
class Try:
    """One task try: its activity, its ``supervise`` process and everything it leaves."""

    server: ReferenceServer
    ti_id: str
    activity: Path
    log_path: Path
    scratch: Path
    marker: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr_path = self.scratch / "supervise.stderr"

    # --- running ----------------------------------------------------------------------

    def point_at(self, url: str) -> None:
        """Make the activity talk to ``url`` (a proxy) instead of the server."""
        doc = json.loads(self.activity.read_text())
        doc["server"] = url
        self.activity.write_text(json.dumps(doc))

    def start(
        self,
        env: Mapping[str, str] | None = None,
        argv: list[str] | None = None,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m supervisor <activity>`` with fast timings plus ``env``."""
        full_env = {**os.environ, **FAST_TIMINGS, **(env or {})}
        cmd = argv or [sys.executable, "-m", "supervisor", str(self.activity)]
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                **popen,
            )
        self.started = time.monotonic()
        return self.process

    def wait(self, timeout: float = 60) -> Finished:
        """Wait for ``supervise`` to exit (failing, with it killed, after ``timeout``)."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"supervise did not exit within {timeout} s:\n{self.stderr_text()}"
            ) from None
        return Finished(code, time.monotonic() - self.started, self.stderr_text())

    def run(self, env: Mapping[str, str] | None = None, timeout: float = 60) -> Finished:
        """Start ``supervise`` and wait for it."""
        self.start(env)
        return self.wait(timeout)

    def stderr_text(self) -> str:
        """What ``supervise`` wrote to its stderr (and stdout)."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    # --- what the task left -----------------------------------------------------------

    def scratch_file(self, name: str) -> Path:
        """A file in the task's scratch directory (``FAULT_DIR``)."""
        return self.scratch / name

    def wait_for_file(self, name: str, timeout: float = 30) -> str:
        """Wait until the task wrote ``name`` (whole: tasks write it by rename); its text."""
        path = self.scratch_file(name)

        def ready() -> str | None:
            if path.exists():
                return path.read_text()
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"supervise exited ({self.process.returncode}) before the task wrote "
                    f"{name}:\n{self.stderr_text()}"
                )
            return None

        return str(wait_for(ready, timeout, f"the task to write {name}"))

    def release(self) -> None:
        """Let a task that waits for the ``release`` file carry on."""
        self.scratch_file("release").write_text("go")

    def pids(self) -> list[int]:
        """Pids the task recorded (``pids`` file, one a line)."""
        path = self.scratch_file("pids")
        if not path.exists():
            return []
        return [int(line) for line in path.read_text().split()]

    def log(self) -> list[dict[str, Any]]:
        """The task log, one dict per line."""
        with self.log_path.open("rb") as f:
            return [json.loads(line) for line in f]

    def supervisor_events(self) -> list[str]:
        """The ``event`` of every record the supervisor itself wrote."""
        return [r["event"] for r in self.log() if r["logger"] == "supervisor"]

    def finished_record(self) -> dict[str, Any]:
        """The supervisor's closing ``Task finished`` record."""
        records = [r for r in self.log() if r["event"] == "Task finished"]
        assert len(records) == 1, records
        return records[0]

    def state(self) -> str | None:
        """The task instance's state on the server."""
        return self.server.admin.get_task_instance(self.ti_id).state

    def task_processes(self) -> list[psutil.Process]:
        """Living processes (zombies excluded) that carry this try's marker."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get("FAULT_MARKER") == self.marker:
                    found.append(proc)
        return found

    def assert_no_task_process_left(self) -> None:
        """No process of the task is alive, and no pid it recorded belongs to a live one."""
        left = self.task_processes()
        assert not left, f"task processes still alive: {[(p.pid, p.cmdline()) for p in left]}"
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                assert proc.status() == psutil.STATUS_ZOMBIE or (
                    proc.environ().get("FAULT_MARKER") != self.marker
                ), f"recorded task pid {pid} still alive"

    def cleanup(self) -> None:
        """Kill whatever is left (only after a failed assertion): supervise and the task."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for proc in self.task_processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()


class TryFactory:
    """Makes :class:`Try` objects on one server; cleans up after the test."""

    def __init__(self, server: ReferenceServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.tries: list[Try] = []

    def __call__(
        self,
        entry: str | None = None,
        cmd: list[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **create: Any,
    ) -> Try:
        """A queued task running ``entry`` (fault_tasks name) or ``cmd``, not started yet."""
        marker = uuid.uuid4().hex
        scratch = self.tmp / f"try{len(self.tries)}"
        scratch.mkdir()
        task_env = {"FAULT_MARKER": marker, "FAULT_DIR": str(scratch), **(env or {})}
        log_path = scratch / "task.log"
        ti_id, activity = self.server.create_task(
            entrypoint=None if entry is None else entrypoint(entry),
            command=cmd,
            env=task_env,
            log_path=log_path,
            activity_path=scratch / "activity.json",
            **create,
        )
        t = Try(self.server, ti_id, activity, log_path, scratch, marker)
        self.tries.append(t)
        return t

    def cleanup(self) -> None:
        """Kill what any try left running."""
        for t in self.tries:
            t.cleanup()


def rss_sampler(pid: int, interval: float = 0.02) -> tuple[list[int], Callable[[], None]]:
    """Sample ``pid``'s RSS in a thread until the returned stop function is called."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        try:
            proc = psutil.Process(pid)
            while not stop.is_set():
                samples.append(proc.memory_info().rss)
                stop.wait(interval)
        except psutil.Error:
            return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()

    return samples, finish


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the fault-injecting proxy ------------------------------------------------------------


@dataclass
class Seen:
    """One request as the proxy saw it."""

    at: float  # time.monotonic() when the request was complete
    method: str
    path: str
    headers: dict[str, str]
    action: str  # "forward", "drop" or "status <code>"
    status: int | None = None  # the status the client got (None: connection dropped)
    body_size: int = 0


#: A fault plan: given a request, what to do with it ("forward", "drop", "lose" or a status).
Plan = Callable[[str, str, int], "str | int"]


def forward_all(method: str, path: str, attempt: int) -> str | int:
    """The plan of a proxy that only watches."""
    return "forward"


class FaultProxy:
    """An HTTP/1.1 proxy on loopback that forwards to ``upstream`` or misbehaves per ``plan``.

    ``plan(method, path, attempt)`` is called once per request (``attempt`` counts requests
    with that method and path, from 1) and returns ``"forward"``, ``"drop"`` (reset the
    connection before the server saw anything), ``"lose"`` (forward, then reset the
    connection instead of relaying the answer: the server acted, the client never knows) or
    an HTTP status to answer with instead of the server. ``upload_rate`` (bytes/s) throttles
    reading request bodies: a server slowed down to that speed. Every request is recorded in
    :attr:`seen`.
    """

    def __init__(self, upstream_port: int, plan: Plan = forward_all, upload_rate: float = 0):
        self.upstream_port = upstream_port
        self.plan = plan
        self.upload_rate = upload_rate
        self.seen: list[Seen] = []
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The Execution API base URL through this proxy."""
        return f"http://127.0.0.1:{self.port}/execution/"

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        """Recorded requests, filtered by method and a path substring."""
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and contains in s.path
            ]

    def close(self) -> None:
        """Stop accepting connections."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            while True:
                head = self._read_head(reader)
                if head is None:
                    return
                request_line, headers, raw_head = head
                method, target, _ = request_line.split(" ", 2)
                length = int(headers.get("content-length", "0"))
                body = self._read_body(reader, length)
                with self._lock:
                    key = (method, target.split("?")[0])
                    attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
                action = self.plan(method, target, attempt)
                seen = Seen(time.monotonic(), method, target, headers, str(action), None, length)
                with self._lock:
                    self.seen.append(seen)
                if action == "drop":
                    _reset(conn)
                    return
                if isinstance(action, int):
                    payload = json.dumps({"detail": f"injected {action}"}).encode()
                    conn.sendall(
                        f"HTTP/1.1 {action} Injected\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(payload)}\r\n\r\n".encode()
                        + payload
                    )
                    seen.status = action
                    continue
                seen.status = self._forward(conn, raw_head, body, lose=action == "lose")
                if seen.status is None or action == "lose":
                    return

    def _read_head(self, reader: Any) -> tuple[str, dict[str, str], bytes] | None:
        lines = []
        while True:
            line = reader.readline(65536)
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                break
            lines.append(line)
        if not lines:
            return None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        # Upstream closes after each answer, so the answer's end is its EOF.
        kept = [
            line for line in lines[1:] if not line.lower().startswith((b"connection:", b"keep-"))
        ]
        raw = lines[0] + b"".join(kept) + b"connection: close\r\n\r\n"
        return lines[0].decode("latin-1").strip(), headers, raw

    def _read_body(self, reader: Any, length: int) -> bytes:
        chunks = []
        remaining = length
        started = time.monotonic()
        while remaining:
            chunk = reader.read(min(remaining, 256 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
            if self.upload_rate:
                due = started + (length - remaining) / self.upload_rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the throttle itself, not a synchronisation
        return b"".join(chunks)

    def _forward(
        self, conn: socket.socket, head: bytes, body: bytes, *, lose: bool = False
    ) -> int | None:
        try:
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                up.sendall(head + body)
                answer = bytearray()
                while chunk := up.recv(1 << 20):
                    answer += chunk
        except OSError:
            return None  # upstream down: the client sees a dropped connection
        if not answer:
            return None
        status = int(answer[9:12])
        if lose:  # the server acted, but its answer never reaches the client
            _reset(conn)
            return status
        # Re-frame for a kept-alive client connection: the answer carries content-length.
        head_end = answer.find(b"\r\n\r\n")
        head_lines = [
            line
            for line in bytes(answer[:head_end]).split(b"\r\n")
            if not line.lower().startswith(b"connection:")
        ]
        try:
            conn.sendall(b"\r\n".join(head_lines) + b"\r\n\r\n" + answer[head_end + 4 :])
        except OSError:
            return None
        return status


def _reset(conn: socket.socket) -> None:
    """Make closing ``conn`` reset the connection (RST), as a crashed peer or middlebox does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


@contextlib.contextmanager
def proxy_to(server: ReferenceServer, **options: Any) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of ``server`` for the duration of a ``with``."""
    proxy = FaultProxy(server.port, **options)
    try:
        yield proxy
    finally:
        proxy.close()
