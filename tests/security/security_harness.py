"""Running hostile tasks under a real ``supervise`` against a real reference server.

``supervise`` runs as ``python -m supervisor`` with this interpreter (the project's venv), in
the repository root, so activities name probe tasks as ``tests/security/tasks/probe.py:f``.
Sessions and CI run as root: tests that need an unprivileged process use :data:`NOBODY`,
with directories made by the ``scratch`` fixture. Test modules import the fixtures from
here (a conftest.py would clash with tests/supervisor's ``from conftest import``).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apiserver.testing import ReferenceServer

ROOT = Path(__file__).resolve().parents[2]
PROBE = "tests/security/tasks/probe.py"
RAW_TASK = str(ROOT / "tests" / "security" / "tasks" / "raw_channel.py")
NOBODY = pwd.getpwnam("nobody")
#: Upper bound for one supervise run; every run ends on the task's own exit long before.
RUN_TIMEOUT = 120

#: The header of every token the reference server signs: any HS512 JWT starts with it.
JWT_HEADER = b"eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9"
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}")


# ``supervise`` as an unprivileged user. The interpreter may live where that user cannot
# read it (/root/.pyenv), so it starts as root, loads everything supervise needs, then drops
# to the user and makes itself dumpable again, as a process started by that user would be
# (the kernel clears the flag on setuid): whatever hides it afterwards is supervise's doing.
_AS_USER = """
import ctypes, os, sys
import httpx, sdk.runner, supervisor._linux, supervisor.activity, supervisor.cli
import supervisor.supervise, concurrent.futures.thread, email.utils, encodings.idna
httpx.Client(trust_env=False).close()  # loads what a client loads lazily (ssl, certifi)
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
supervisor.cli.main(sys.argv[3:])
"""


@pytest.fixture(scope="module", name="server")
def reference_server() -> Iterator[ReferenceServer]:
    """The real reference server in a subprocess on loopback, one per test module."""
    with ReferenceServer() as running:
        yield running


def supervise(
    activity: Path | str,
    *,
    stdin: bytes | None = None,
    user: pwd.struct_passwd | None = None,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``supervise [options] activity`` to its end; ``user`` runs it unprivileged;
    ``env`` is added to supervise's own environment."""
    if user is None:
        command = [sys.executable, "-m", "supervisor"]
    else:
        command = [sys.executable, "-c", _AS_USER, str(user.pw_uid), str(user.pw_gid)]
    return subprocess.run(
        [*command, *options, str(activity)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=RUN_TIMEOUT,
        check=False,
        env={**os.environ, **(env or {})},
    )


#: Makes a fresh directory under /tmp owned by ``user`` (root if None) with ``mode``.
MakeDir = Callable[..., Path]


@pytest.fixture(name="scratch")
def scratch_dirs() -> Iterator[MakeDir]:
    """``scratch(user=None, mode=0o700)``: a fresh directory under /tmp (pytest's own
    directories are closed to other users); every one is removed after the test."""
    made: list[Path] = []

    def make(user: pwd.struct_passwd | None = None, *, mode: int = 0o700) -> Path:
        path = Path(tempfile.mkdtemp(prefix="taskvisor-security-"))
        made.append(path)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def needles(token: str) -> dict[str, bytes]:
    """What counts as finding the token: the token, every 8-character piece of its signature,
    and the header every token of the server starts with (so tokens the test never saw, like
    the execution token ``/run`` exchanged, count too)."""
    signature = token.rsplit(".", 1)[1]
    found = {"token": token.encode(), "jwt_header": JWT_HEADER}
    for i in range(len(signature) - 7):
        found[f"signature[{i}:{i + 8}]"] = signature[i : i + 8].encode()
    return found


def search(data: bytes, token: str) -> list[str]:
    """The names of the needles of ``token`` that occur in ``data``."""
    return [name for name, needle in needles(token).items() if needle in data]


@dataclass
class Evidence:
    """What a probe task left in its output directory."""

    out: Path

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "report.json").read_text())
        return data

    def names(self) -> list[str]:
        """Every location the probe could read."""
        return sorted(p.name.removesuffix(".bin") for p in self.out.glob("*.bin"))

    def read(self, name: str) -> bytes:
        return (self.out / f"{name}.bin").read_bytes()

    def findings(self, token: str, names: Iterable[str]) -> dict[str, list[str]]:
        """For each readable location among ``names``: the needles found in it."""
        hits = {}
        for name in names:
            path = self.out / f"{name}.bin"
            if path.exists() and (found := search(path.read_bytes(), token)):
                hits[name] = found[:3]
        return hits


def log_records(path: Path) -> list[dict[str, Any]]:
    """The task log's records."""
    return [json.loads(line) for line in path.read_text().splitlines()]
