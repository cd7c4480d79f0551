"""The floors: what the least a process, a fork, a pipe or an HTTP call costs on this machine.

Each of our numbers is shown as a multiple of its floor. Floors that need a small, fresh
interpreter (a fork's cost grows with the parent's memory) run in their own process:
``python -m benchmarks.floors <name> <n>`` prints one JSON object.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.procfs import children_of, pss_kib
from benchmarks.stats import percentile

__all__ = [
    "http_keepalive",
    "idle_pair_pss",
    "in_fresh_process",
    "p50_us",
    "python_pass",
    "python_pass_rss",
]


# --- in a fresh process ----------------------------------------------------------------


def _fork(n: int) -> dict[str, Any]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        samples.append(time.perf_counter_ns() - t0)
    return {"ns": samples}


def _pipe_rtt(n: int) -> dict[str, Any]:
    """Request/response over two pipes, msgspec on both sides, as the channel does."""
    import msgspec

    from comms.messages import GetVariable, VariableResult

    to_r, to_w = os.pipe()
    back_r, back_w = os.pipe()
    if os.fork() == 0:
        os.close(to_w)
        os.close(back_r)
        decode_request = msgspec.json.Decoder(GetVariable).decode
        encode = msgspec.json.Encoder().encode
        while line := os.read(to_r, 65536):
            req = decode_request(line[:-1])
            os.write(back_w, encode(VariableResult(id=req.id, key=req.key, value="v")) + b"\n")
        os._exit(0)
    os.close(to_r)
    os.close(back_w)
    encode = msgspec.json.Encoder().encode
    decode_result = msgspec.json.Decoder(VariableResult).decode
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        os.write(to_w, encode(GetVariable(id=i, key="bench_local")) + b"\n")
        decode_result(os.read(back_r, 65536)[:-1])
        samples.append(time.perf_counter_ns() - t0)
    os.close(to_w)
    os.wait()
    return {"ns": samples}


def _python_call(n: int) -> dict[str, Any]:
    """One Python function call that returns a value from a dict, timed like the SDK calls."""
    values = {"bench_local": "value"}

    def get(key: str) -> str:
        return values[key]

    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        get("bench_local")
        samples.append(clock() - t0)
    return {"ns": samples}


def _pipe_notify(n: int) -> dict[str, Any]:
    """One-way ``Log`` messages: encode + one write each, decoded by the reader."""
    import msgspec

    from comms.messages import Log

    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        encode = msgspec.json.Encoder().encode
        for _ in range(n):
            os.write(
                w, encode(Log(event="notification", timestamp=dt.datetime.now(dt.UTC))) + b"\n"
            )
        os._exit(0)
    os.close(w)
    decode = msgspec.json.Decoder(Log).decode
    t0 = time.perf_counter()
    count = 0
    rest = b""
    while chunk := os.read(r, 256 * 1024):
        data = rest + chunk
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            decode(line)
            count += 1
    seconds = time.perf_counter() - t0
    os.wait()
    return {"seconds": seconds, "count": count}


def _pipe_copy(n: int) -> dict[str, Any]:
    """The same lines the log relay benchmark prints, copied from a pipe to a file as is."""
    r, w = os.pipe()
    lines = [f"line {i} of the log relay benchmark password=xxxxxxxx\n" for i in range(n)]
    chunks = ["".join(lines[i : i + 2000]).encode() for i in range(0, n, 2000)]
    if os.fork() == 0:
        os.close(r)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(w, view) :]
        os._exit(0)
    os.close(w)
    path = f"/tmp/taskvisor-bench-copy-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    t0 = time.perf_counter()
    while chunk := os.read(r, 256 * 1024):
        os.write(fd, chunk)
    seconds = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    os.wait()
    return {"seconds": seconds, "count": n}


_FRESH = {
    "fork": _fork,
    "pipe_rtt": _pipe_rtt,
    "python_call": _python_call,
    "pipe_notify": _pipe_notify,
    "pipe_copy": _pipe_copy,
}


def in_fresh_process(name: str, *args: int, module: str = "benchmarks.floors") -> dict[str, Any]:
    """Run measurement ``name`` of ``module`` (a floor: ``args`` is its iteration count) in a
    new interpreter; its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", module, name, *map(str, args)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# --- in the harness ----------------------------------------------------------------------


def python_pass() -> float:
    """Spawn-to-exit seconds of ``python -c pass``."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def python_pass_rss() -> int:
    """Peak RSS (KiB) of a bare ``python`` that only reads its own ``VmHWM`` at the end.

    (``wait4``'s ``ru_maxrss`` would count the forking parent's pages from before exec.)
    """
    code = "print(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def http_keepalive(port: int, path: str, token: str, n: int) -> dict[str, Any]:
    """``n`` GETs on one kept-alive connection (stdlib ``http.client``): latencies and the
    CPU time this process spent per request."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {token}", "Airflow-API-Version": "2026-06-30"}
    samples = []
    cpu0 = time.process_time()
    for i in range(n + 20):
        t0 = time.perf_counter_ns()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        if i >= 20:  # warm-up
            samples.append(time.perf_counter_ns() - t0)
        if i == 19:
            cpu0 = time.process_time()
    cpu = (time.process_time() - cpu0) / n
    conn.close()
    return {"ns": samples, "cpu_per_request": cpu}


_PAIR = "import os, time\nos.fork()\ntime.sleep(120)\n"


def idle_pair_pss(k: int) -> list[float]:
    """PSS (KiB) of each of ``k`` sleeping ``python`` + forked-child pairs, all alive at once."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _PAIR], start_new_session=True) for _ in range(k)
    ]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(children_of(p.pid) for p in procs):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let the children settle after fork
        result = []
        for p in procs:
            pids = [p.pid, *children_of(p.pid)]
            result.append(float(sum((pss_kib(pid) or 0) for pid in pids)))
        return result
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def p50_us(result: dict[str, Any]) -> float:
    """Median of a floor's ``ns`` samples, in microseconds."""
    return percentile(result["ns"], 0.5) / 1000


if __name__ == "__main__":
    print(json.dumps(_FRESH[sys.argv[1]](int(sys.argv[2]))))
