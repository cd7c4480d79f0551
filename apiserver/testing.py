"""A real reference server for tests and benchmarks, in a subprocess on a loopback port.

This module is product: every test suite and the benchmarks use it. Typical use::

    from apiserver.testing import ReferenceServer

    with ReferenceServer() as server:
        server.admin.set_variable("greeting", "hello")
        ti_id, activity = server.create_task(entrypoint="examples/demo_task.py:main")
        subprocess.run(["supervise", str(activity)], check=True)
        assert server.admin.get_task_instance(ti_id).state == "success"

How it works: the parent binds a listening socket on ``127.0.0.1`` (port 0 picks a free port
the first time) and hands it to ``python -m apiserver serve --fd N``, so there is no window in
which another process could take the port. Start-up polls ``GET /execution/health`` until it
answers, with a deadline (no sleeps). :meth:`ReferenceServer.stop` ends the process gracefully
and :meth:`ReferenceServer.kill` abruptly (either way the port then refuses connections);
:meth:`ReferenceServer.start` starts it again on the same port, database and secret, which is
what fault-injection tests need.

With ``ssl_certfile`` and ``ssl_keyfile`` the server speaks HTTPS and :attr:`ReferenceServer.url`
says ``https://``; a client then needs to trust the certificate (for ``supervise``:
``SSL_CERT_FILE`` naming it, or the CA that issued it).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from apiserver.admin import Admin
from apiserver.auth import Scope, mint_token
from apiserver.listening import listen

__all__ = ["ReferenceServer", "ServerStartError"]

_HOST = "127.0.0.1"


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Kill a server left running by an owner that was never closed (e.g. a crashed run)."""
    if process.poll() is None:
        process.kill()
        process.wait()


class ServerStartError(RuntimeError):
    """The server process exited or did not answer ``/health`` before the deadline."""


class ReferenceServer:
    """The reference Execution API server as a subprocess; a context manager.

    Attributes once started: ``url`` (the execution base URL, ending in ``/execution/``),
    ``port``, ``db_path``, ``secret`` (random, 64+ bytes), ``admin`` (an :class:`Admin` on the
    same database), ``workdir`` (a temporary directory holding the database, activity files,
    task logs and the server's own output in ``server.log``; removed on exit unless given).

    ``token_lifetime`` is the life of the tokens the server issues (``/run`` exchange,
    reissue) and the default of :meth:`mint_token`; ``refresh_floor`` and ``leeway`` are passed
    to :func:`apiserver.app.create_app` (use ``refresh_floor=0`` for a pure 20% reissue window).

    ``ssl_certfile`` and ``ssl_keyfile`` (PEM files; both or neither) make it serve HTTPS, as
    ``taskvisor serve --ssl-certfile --ssl-keyfile`` does.
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 600,
        leeway: float = 10,
        refresh_floor: float = 30,
        workdir: str | Path | None = None,
        port: int = 0,
        startup_timeout: float = 30.0,
        ssl_certfile: str | Path | None = None,
        ssl_keyfile: str | Path | None = None,
    ) -> None:
        if ssl_certfile is not None and ssl_keyfile is None:
            raise ValueError("ssl_certfile needs ssl_keyfile: give both or neither")
        if ssl_keyfile is not None and ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile: give both or neither")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="taskvisor-server-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.workdir / "server.sqlite"
        self.server_log = self.workdir / "server.log"
        self.secret = secrets.token_urlsafe(64)
        self.token_lifetime = token_lifetime
        self.leeway = leeway
        self.refresh_floor = refresh_floor
        self.port = port
        self.startup_timeout = startup_timeout
        self.ssl_certfile = None if ssl_certfile is None else Path(ssl_certfile)
        self.ssl_keyfile = None if ssl_keyfile is None else Path(ssl_keyfile)
        self.admin = Admin(self.db_path)
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[[subprocess.Popen[bytes]], ReferenceServer] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Execution API base URL, e.g. ``http://127.0.0.1:41234/execution/`` (``https://``
        with a certificate)."""
        if not self.port:
            raise RuntimeError("the server has not been started yet")
        scheme = "http" if self.ssl_certfile is None else "https"
        return f"{scheme}://{_HOST}:{self.port}/execution/"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same port and database) and wait until it answers.

        Raises :class:`ServerStartError` with the server's output if it does not come up.
        """
        if self.running:
            raise RuntimeError("the server is already running")
        listener = self._listen()
        try:
            self.port = listener.getsockname()[1]
            env = {**os.environ, "TASKVISOR_JWT_SECRET": self.secret}
            command = [
                sys.executable,
                "-m",
                "apiserver",
                "serve",
                "--fd",
                str(listener.fileno()),
                "--db",
                str(self.db_path),
                "--token-lifetime",
                str(self.token_lifetime),
                "--leeway",
                str(self.leeway),
                "--refresh-floor",
                str(self.refresh_floor),
            ]
            if self.ssl_certfile is not None and self.ssl_keyfile is not None:
                command += ["--ssl-certfile", str(self.ssl_certfile)]
                command += ["--ssl-keyfile", str(self.ssl_keyfile)]
            with self.server_log.open("ab") as log:
                self._process = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=[listener.fileno()],
                )
            self._reaper = weakref.finalize(self, _reap, self._process)
        finally:
            # The child holds the socket now; keeping our copy would let the kernel accept
            # connections after the server stopped, instead of refusing them.
            listener.close()
        self._wait_healthy()

    def _listen(self) -> socket.socket:
        # listen() sets SO_REUSEADDR: rebinding the previous port right after stop() must not
        # fail on TIME_WAIT.
        listener = listen(_HOST, self.port)
        listener.set_inheritable(True)
        return listener

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        health = f"{self.url}health"
        while True:
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"the server exited with code {self._process.returncode}:\n"
                    + self._server_output()
                )
            # The socket already listens, so this waits in the backlog until the server
            # accepts: no sleep is needed between attempts.
            try:
                if self._health_status() == 200:
                    return
            except TimeoutError:
                pass
            except OSError:
                # Refused or reset: the process is going away. Wait on it, not on a timer.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(0.05)
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"the server did not answer {health} within {self.startup_timeout} s:\n"
                    + self._server_output()
                )

    def _health_status(self) -> int:
        """The status of one ``GET .../health`` (http.client: no proxy is ever consulted)."""
        path = f"{urlsplit(self.url).path}health"
        connection: http.client.HTTPConnection
        if self.ssl_certfile is None:
            connection = http.client.HTTPConnection(_HOST, self.port, timeout=1.0)
        else:
            # This only asks whether the process we started answers; whether a client trusts
            # its certificate is what the caller tests.
            unverified = ssl._create_unverified_context()  # noqa: S323
            connection = http.client.HTTPSConnection(
                _HOST, self.port, timeout=1.0, context=unverified
            )
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()

    def _server_output(self) -> str:
        try:
            return self.server_log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def _take_process(self) -> subprocess.Popen[bytes] | None:
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        process, self._process = self._process, None
        return process

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server process (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        process = self._take_process()
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """End the server process abruptly (SIGKILL), as a crash would, and wait for it.

        Requests in flight are cut off; what was committed to the database stays.
        """
        process = self._take_process()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server, close the admin connection, remove the temporary directory."""
        self.stop()
        self.admin.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ReferenceServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- tokens and tasks --------------------------------------------------------------

    def mint_token(
        self, ti_id: str, *, scope: Scope = "execution", lifetime: float | None = None
    ) -> str:
        """A token this server accepts for ``ti_id`` (``lifetime`` defaults to the server's)."""
        return mint_token(
            self.secret,
            ti_id,
            scope=scope,
            lifetime=self.token_lifetime if lifetime is None else lifetime,
        )

    def create_task(
        self,
        entrypoint: str | None = None,
        command: Sequence[str] | None = None,
        *,
        max_tries: int = 0,
        try_number: int = 1,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        run_as: str | None = None,
        extra_activity: Mapping[str, Any] | None = None,
        dag_id: str = "taskvisor",
        task_id: str = "task",
        run_id: str | None = None,
        map_index: int = -1,
        team: str | None = None,
        scope: Scope = "workload",
        token_lifetime: float | None = None,
        activity_path: str | Path | None = None,
    ) -> tuple[str, Path]:
        """Create a queued task instance and its activity file; return ``(ti_id, path)``.

        Give exactly one of ``entrypoint`` (``"pkg.mod:func"`` or ``"path/file.py:func"``)
        and ``command``. Each call makes a fresh dag run unless ``run_id`` is given.
        ``log_path`` None puts the task log at ``workdir/logs/<ti_id>.log``; the activity
        goes to ``workdir/activities/<ti_id>.json`` unless ``activity_path`` is given.
        ``extra_activity`` is merged into the document as is (to test the supervisor's
        validation). The token is ``workload``-scoped unless ``scope`` says otherwise.
        """
        ti_id = str(uuid.uuid4())
        if log_path is None:
            (self.workdir / "logs").mkdir(exist_ok=True)
            log_path = self.workdir / "logs" / f"{ti_id}.log"
        if activity_path is None:
            (self.workdir / "activities").mkdir(exist_ok=True)
            activity_path = self.workdir / "activities" / f"{ti_id}.json"
        self.admin.write_activity(
            activity_path,
            server=self.url,
            secret=self.secret,
            ti_id=ti_id,
            entrypoint=entrypoint,
            command=command,
            dag_id=dag_id,
            task_id=task_id,
            run_id=run_id,
            map_index=map_index,
            try_number=try_number,
            max_tries=max_tries,
            team=team,
            context=context,
            log_path=log_path,
            timeout=timeout,
            env=env,
            run_as=run_as,
            scope=scope,
            token_lifetime=self.token_lifetime if token_lifetime is None else token_lifetime,
            extra_fields=extra_activity,
        )
        return ti_id, Path(activity_path)
