"""Hostile probe tasks: what a task could grab, collected as evidence for the test to judge.

Probes that run as ``nobody`` import only what the task runner already loaded, or what
lives in the repository and the venv: the interpreter's own files may be unreadable to
``nobody`` (a Python under /root). Hence ``os.path`` rather than ``pathlib``, and no
``select``.

``tests/security`` runs these under a real ``supervise``. A probe never searches for the
token itself (holding the needle would put it in the memory being searched): it copies
everything it can read into ``$PROBE_OUT`` and records every refusal in ``report.json``;
the test, which knows the token, searches the copies. Nothing here trusts the SDK's
cooperation beyond the calls a real task makes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import stat
import sys
from typing import Any

import msgspec

from sdk import Variable, XCom

#: Read at most this much from one fd or file.
_READ_LIMIT = 16 * 1024 * 1024
_PR_SET_DUMPABLE = 4
_PTRACE_SEIZE = 0x4206
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}")


class Evidence:
    """Copies of what the probe could read (``<name>.bin``) and why it could not read the rest."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.report: dict[str, Any] = {"errors": {}, "sizes": {}}

    def keep(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.out, f"{name}.bin"), "wb") as f:
            f.write(data)
        self.report["sizes"][name] = len(data)

    def refused(self, name: str, exc: OSError) -> None:
        self.report["errors"][name] = errno.errorcode.get(exc.errno or 0, str(exc))

    def read_file(self, name: str, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                data = f.read(_READ_LIMIT)
        except OSError as exc:
            self.refused(name, exc)
            return None
        self.keep(name, data)
        return data

    def read_memory(self, name: str, pid: str) -> None:
        """Every readable mapping of ``pid`` through ``/proc/<pid>/mem``, concatenated."""
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read()
            mem = open(f"/proc/{pid}/mem", "rb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            self.refused(name, exc)
            return
        chunks: list[bytes] = []
        regions = failed = 0
        with mem:
            for line in maps.splitlines():
                fields = line.split()
                span, perms = fields[0], fields[1]
                if not perms.startswith("r") or (len(fields) > 5 and fields[5] == "[vvar]"):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    chunks.append(mem.read(end - start))
                    regions += 1
                except OSError:
                    failed += 1
        self.report[f"{name}_regions"] = [regions, failed]
        self.keep(name, b"".join(chunks))

    def save(self) -> None:
        with open(os.path.join(self.out, "report.json"), "wb") as f:
            f.write(msgspec.json.encode(self.report))


def token_hunt() -> dict[str, Any]:
    """Look everywhere a task could find its try's token; leave the copies in ``$PROBE_OUT``."""
    ev = Evidence(os.environ["PROBE_OUT"])
    ev.report["uid"], ev.report["gid"], ev.report["groups"] = (
        os.getuid(),
        os.getgid(),
        os.getgroups(),
    )
    # After setuid the kernel marks a process non-dumpable, which hides even its own /proc
    # files from it; a task can undo that for itself, so the probe does.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    # The task's own process.
    ev.keep("environ", b"\0".join(k.encode() + b"=" + v.encode() for k, v in os.environ.items()))
    ev.read_file("proc_environ", "/proc/self/environ")
    ev.keep("argv", "\0".join(sys.argv).encode())
    ev.read_file("proc_cmdline", "/proc/self/cmdline")
    ev.report["fds"] = _read_fds(ev)
    ev.read_memory("self_mem", "self")
    # The supervisor.
    ppid = str(os.getppid())
    info = os.stat(f"/proc/{ppid}/environ")
    ev.report["supervisor"] = {"pid": int(ppid), "proc_owner": [info.st_uid, info.st_gid]}
    status = ev.read_file("supervisor_status", f"/proc/{ppid}/status")
    if status is not None:
        uid_line = next(ln for ln in status.decode().splitlines() if ln.startswith("Uid:"))
        ev.report["supervisor"]["uids"] = [int(x) for x in uid_line.split()[1:]]
    ev.read_file("supervisor_environ", f"/proc/{ppid}/environ")
    cmdline = ev.read_file("supervisor_cmdline", f"/proc/{ppid}/cmdline")
    ev.read_memory("supervisor_mem", ppid)
    if os.getuid() != 0:  # root may attach to anything: nothing to learn, and it would stick
        ev.report["supervisor_ptrace"] = _seize(int(ppid))
    _peer_control(ev)
    # The activity file: named on the supervisor's command line, or known to the attacker.
    candidates = [os.environ.get("PROBE_ACTIVITY", "")]
    if cmdline:
        candidates.append(cmdline.rstrip(b"\0").split(b"\0")[-1].decode())
    for i, path in enumerate(p for p in candidates if p and p != "-"):
        ev.read_file(f"activity_{i}", path)
    ev.save()
    return {"done": True}


def _peer_control(ev: Evidence) -> None:
    """Control: a dumpable process of the task's own user (a fork of the probe) is readable."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # until the probe is done looking
        os._exit(0)
    os.close(r)
    try:
        ev.read_file("peer_environ", f"/proc/{pid}/environ")
        try:
            with open(f"/proc/{pid}/mem", "rb"):
                ev.report["peer_mem_opens"] = True
        except OSError as exc:
            ev.refused("peer_mem", exc)
        ev.report["peer_ptrace"] = _seize(pid)  # released when the peer exits
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def _seize(pid: int) -> str:
    """Attach to ``pid`` with ``PTRACE_SEIZE`` (it keeps running): "attached" or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(_PTRACE_SEIZE, pid, None, None) == 0:
        return "attached"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def _read_fds(ev: Evidence) -> dict[str, str]:
    """Every open fd: where it points, and its content when reading does not block."""
    seen = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            seen[name] = os.readlink(f"/proc/self/fd/{name}")
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the fd of the listing itself, closed by now
        try:
            if stat.S_ISREG(mode):
                ev.keep(f"fd_{name}", os.pread(fd, _READ_LIMIT, 0))
            else:
                ev.keep(f"fd_{name}", _read_without_blocking(fd))
        except BlockingIOError:
            pass  # nothing to read now
        except OSError as exc:
            ev.refused(f"fd_{name}", exc)
    return seen


def _read_without_blocking(fd: int) -> bytes:
    # Not select(): a run_as task can import only what its user may read, and this test
    # machine's Python lives under /root.
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        return os.read(fd, _READ_LIMIT)
    finally:
        os.set_blocking(fd, was_blocking)


def prints_tokens_found_in_supervisor_memory() -> int:
    """A same-user root task reads its supervisor's memory and prints every JWT it finds."""
    mem_path = os.path.join(os.environ["PROBE_OUT"], "supervisor_mem.bin")
    token_hunt()
    with open(mem_path, "rb") as f:
        found = sorted(set(_JWT.findall(f.read())))
    for token in found:
        print(f"stolen token: {token.decode()}", flush=True)
    return len(found)


def reads_activity_then_prints_its_token() -> None:
    """A same-user task reads the activity file and prints the token, whole and in parts."""
    with open(os.environ["PROBE_ACTIVITY"], "rb") as f:
        token = msgspec.json.decode(f.read())["token"]
    print(f"token: {token}", flush=True)
    print(f"signature: {token.rsplit('.', 1)[1]}", flush=True)
    sys.stderr.write(f"token on stderr: {token}\n")
    sys.stderr.flush()


def run_as_snoop() -> dict[str, Any]:
    """As the run_as user: who am I, and can I read the activity file or the log directory?"""
    ev = Evidence(os.environ["PROBE_OUT"])
    ev.report["uid"], ev.report["gid"], ev.report["groups"] = (
        os.getuid(),
        os.getgid(),
        os.getgroups(),
    )
    ev.read_file("activity", os.environ["PROBE_ACTIVITY"])
    log_dir = os.environ["PROBE_LOG_DIR"]
    ev.report["log_dir_listing"] = sorted(os.listdir(log_dir))
    for name in ev.report["log_dir_listing"]:
        ev.read_file(f"log_dir/{name}", os.path.join(log_dir, name))
    print("run_as probe wrote this line", flush=True)
    ev.save()
    return {"uid": os.getuid()}


def network_probe() -> dict[str, Any]:
    """Try the API server's port directly, then use the SDK, which goes through the supervisor."""
    import socket

    port = int(os.environ["PROBE_SERVER_PORT"])
    result: dict[str, Any] = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))  # an ASCII address needs no idna codec
            result["direct"] = "connected"
    except OSError as exc:
        result["direct"] = errno.errorcode.get(exc.errno or 0, str(exc))
    result["variable"] = Variable.get("net_probe_variable")
    XCom.push("pushed_through_supervisor", "yes")
    return result


def leaks_every_secret() -> None:
    """Print, log and raise the secrets it was handed, on every output path a task has."""
    from sdk import Connection, log, mask_secret

    conn = Connection.get("sec_conn")
    short = Connection.get("short_conn")
    extra = msgspec.json.decode(conn.extra or "{}")
    db_password = Variable.get("db_password")
    plain = Variable.get("plain_setting")
    own = "task-registered-secret-77"
    mask_secret(own)
    mask_secret("tiny")
    written = "value-set-by-the-task-55"
    Variable.set("new_api_token", written)  # a sensitive key: its value is masked from now
    secrets = {
        "password": conn.password,
        "extra_api_key": extra["api_key"],
        "extra_nested": extra["nested"]["inner"],
        "variable": db_password,
        "mask_secret": own,
        "variable_set": written,
    }
    for name, value in secrets.items():
        print(f"stdout {name}={value}", flush=True)
        sys.stderr.write(f"stderr {name}={value}\n")
        sys.stderr.flush()
        log.info(f"structured {name}={value}", value=value, nested={"list": [value]})
        log.info(f"keyed {name}", **{f"key-{value}": "in the field name"})
        logging.getLogger(f"lg.{value}").warning(f"via logging {name}")
        # One line in two write() calls, split in the middle of the secret.
        assert value is not None
        half = len(value) // 2
        os.write(1, f"split-stdout {name}={value[:half]}".encode())
        Variable.get("plain_setting")  # a round trip between the two halves
        os.write(1, f"{value[half:]} end\n".encode())
        os.write(2, f"split-stderr {name}={value[:half]}".encode())
        Variable.get("plain_setting")
        os.write(2, f"{value[half:]} end\n".encode())
    print(f"not secret: plain={plain} short_password={short.password} tiny=tiny", flush=True)
    raise RuntimeError(f"giving up with {conn.password} and {db_password}")


def leaks_across_an_over_long_line() -> None:
    """A line longer than the supervisor holds (written in pieces), a secret at the cut."""
    from sdk import Connection
    from supervisor.tasklog import MAX_PENDING_LINE

    password = Connection.get("sec_conn").password
    assert password is not None
    half = len(password) // 2
    os.write(1, b"x" * MAX_PENDING_LINE + f" {password[:half]}".encode())
    Variable.get("plain_setting")  # a round trip: the supervisor has read the first part
    os.write(1, f"{password[half:]} end\n".encode())
    os.write(2, b"y" * MAX_PENDING_LINE + f" {password[:half]}".encode())
    Variable.get("plain_setting")
    os.write(2, f"{password[half:]} end\n".encode())
