"""A DAG task that hunts for the secrets of its supervisor: ``test_airflow_dag_security.py``.

``hunts_for_secrets`` is ordinary DAG code (TaskFlow), run by Airflow's own task runner under
either supervisor. It is given no secret. What to look for comes as fingerprints in its
environment (``PROBE_FINGERPRINTS``: per label, a value's first 8 characters, its length and
its SHA-256), so a hit means the whole value is there, and the search itself never put it
there. It returns what it found as its XCom: digests, names, sizes and errors, never a value.

Where it looks (the report's *locations*):

==================  =====================================================================
``memory``          every readable mapping of ``/proc/self/maps``, via ``/proc/self/mem``
``environ``         ``os.environ``, as ``NAME=value`` entries
``proc_environ``    ``/proc/self/environ``: the environment the process was started with
``argv``            ``sys.argv``; ``proc_cmdline``: ``/proc/self/cmdline``
``file:<path>``     each file named on its own or its parent's command line
``fd:<n>``          each open fd: a regular file is read, a socket peeked at (``MSG_PEEK``:
                    nothing consumed, never blocking), a pipe only named (a read would take
                    what its reader is owed, or block)
``parent_*``        its supervisor's (the parent's) ``environ``, ``cmdline`` and ``mem``
==================  =====================================================================

What it looks for in each: every JWT-shaped string (three base64url parts, the first two
JSON objects), reported by the SHA-256 of the token and of its signature and by the ``sub``
and ``scope`` it claims; and each fingerprint.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Iterator
from typing import Any

from airflow.sdk import DAG, task

DAG_ID = "taskvisor_probe"
#: A JWT: three base64url parts, the first two JSON objects (``eyJ`` is ``{"``).
JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
#: At most this much is read of one file or one socket.
READ_CAP = 16 << 20
#: Lets a process read the memory of a non-dumpable process of its user (capabilities(7)).
CAP_SYS_PTRACE = 19
#: Mappings the kernel refuses to hand out through ``mem`` (EIO).
UNREADABLE_MAPPINGS = ("[vvar]", "[vvar_vclock]", "[vsyscall]")


class Report:
    """What the hunt found, as the task returns it."""

    def __init__(self, fingerprints: dict[str, dict[str, Any]]) -> None:
        self.fingerprints = {
            label: (spec["start"].encode(), int(spec["length"]), spec["sha256"])
            for label, spec in fingerprints.items()
        }
        self.read: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.jwts: dict[str, set[tuple[str, str, str | None, str | None]]] = {}
        self.found: dict[str, set[str]] = {}

    def search(self, location: str, chunks: Iterator[bytes]) -> None:
        """Search each chunk of ``location``; an unreadable one is recorded by its errno name."""
        try:
            for chunk in chunks:
                self.read[location] = self.read.get(location, 0) + len(chunk)
                for token in JWT_SHAPE.findall(chunk):
                    self.jwts.setdefault(location, set()).add(summary(token))
                for label, (start, length, digest) in self.fingerprints.items():
                    at = chunk.find(start)
                    while at >= 0:
                        if hashlib.sha256(chunk[at : at + length]).hexdigest() == digest:
                            self.found.setdefault(label, set()).add(location)
                            break
                        at = chunk.find(start, at + 1)
        except OSError as exc:
            self.errors[location] = errno.errorcode.get(exc.errno or 0, str(exc))

    def as_json(self) -> dict[str, Any]:
        """The findings as JSON: bytes read and errors by location, JWTs by location, and
        the locations of each fingerprint found."""
        keys = ("sha256", "signature_sha256", "sub", "scope")
        return {
            "read": self.read,
            "errors": self.errors,
            "jwts": {
                location: [dict(zip(keys, found, strict=True)) for found in sorted(tokens, key=str)]
                for location, tokens in self.jwts.items()
            },
            "found": {label: sorted(locations) for label, locations in self.found.items()},
        }


def summary(token: bytes) -> tuple[str, str, str | None, str | None]:
    """A JWT by its digest and its signature's, and the ``sub`` and ``scope`` it claims."""
    claims: Any = {}
    payload = token.split(b".")[1]
    with contextlib.suppress(ValueError):  # binascii.Error and JSONDecodeError included
        claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    if not isinstance(claims, dict):
        claims = {}
    sub, scope = (str(claims[key]) if key in claims else None for key in ("sub", "scope"))
    signature = token.rsplit(b".", 1)[1]
    return hashlib.sha256(token).hexdigest(), hashlib.sha256(signature).hexdigest(), sub, scope


def whole(path: str) -> Iterator[bytes]:
    """A file's first :data:`READ_CAP` bytes."""
    with open(path, "rb") as f:
        yield f.read(READ_CAP)


def memory(pid: str) -> Iterator[bytes]:
    """Every readable mapping of process ``pid``, one at a time."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        mappings = maps.readlines()  # before reading: the reads below map memory of their own
        for line in mappings:
            fields = line.split()
            if not fields[1].startswith("r") or fields[-1] in UNREADABLE_MAPPINGS:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            try:
                mem.seek(start)
                yield mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue  # unmapped meanwhile, or a device the kernel will not copy


def named_files(pid: str) -> list[str]:
    """The existing regular files named on process ``pid``'s command line (not its program)."""
    try:
        args = command_line(pid)[1:]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return []
    paths = (os.path.join(cwd, arg) for arg in args)
    return [path for path in paths if os.path.isfile(path)]


def open_fds() -> dict[int, str]:
    """Every open fd and what it is (``readlink``), but the one that listed them."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def fd_contents(fd: int) -> Iterator[bytes]:
    """What can be read from ``fd`` without taking anything from anyone or blocking."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        yield os.pread(fd, READ_CAP, 0)
    elif stat.S_ISSOCK(mode):
        with socket.socket(fileno=os.dup(fd)) as sock:
            try:
                yield sock.recv(READ_CAP, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                yield b""  # nothing waiting


def command_line(pid: str) -> list[str]:
    """Process ``pid``'s arguments as ``/proc`` shows them (a process may rewrite them)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [os.fsdecode(arg) for arg in f.read().split(b"\0") if arg]


def has_capability(number: int) -> bool:
    """Whether this process holds capability ``number`` in its effective set."""
    with open("/proc/self/status") as status:
        effective = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> number & 1)


def environ_names(entries: bytes) -> list[str]:
    """The variable names of a ``NAME=value\\0...`` block."""
    return sorted({os.fsdecode(entry.split(b"=", 1)[0]) for entry in entries.split(b"\0") if entry})


def hunt() -> dict[str, Any]:
    """Search every location; the report the task returns."""
    report = Report(json.loads(os.environ.get("PROBE_FINGERPRINTS", "{}")))
    parent = str(os.getppid())
    environ = b"\0".join(name + b"=" + value for name, value in os.environb.items())
    report.search("memory", memory("self"))
    report.search("environ", iter([environ]))
    report.search("argv", iter([b"\0".join(os.fsencode(arg) for arg in sys.argv)]))
    for location, path in (
        ("proc_environ", "/proc/self/environ"),
        ("proc_cmdline", "/proc/self/cmdline"),
        ("parent_environ", f"/proc/{parent}/environ"),
        ("parent_cmdline", f"/proc/{parent}/cmdline"),
    ):
        report.search(location, whole(path))
    report.search("parent_mem", memory(parent))
    for path in sorted({*named_files("self"), *named_files(parent)}):
        report.search(f"file:{path}", whole(path))
    fds = open_fds()
    for fd in fds:
        report.search(f"fd:{fd}", fd_contents(fd))
    names = {"environ": environ_names(environ)}
    for location, path in (
        ("proc_environ", "/proc/self/environ"),
        ("parent_environ", f"/proc/{parent}/environ"),
    ):
        with contextlib.suppress(OSError):
            names[location] = environ_names(next(whole(path)))
    return {
        "uid": os.getuid(),
        "cap_sys_ptrace": has_capability(CAP_SYS_PTRACE),
        "cmdlines": {"self": command_line("self"), "parent": command_line(parent)},
        "fds": {str(fd): target for fd, target in sorted(fds.items())},
        "environ_names": names,
        **report.as_json(),
    }


with DAG(DAG_ID, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):

    @task
    def hunts_for_secrets() -> dict[str, Any]:
        """Search this process and its supervisor for tokens and fingerprinted secrets."""
        found = hunt()
        print(f"searched {sum(found['read'].values())} bytes in {len(found['read'])} locations")
        return found

    hunts_for_secrets()
