"""A stand-in for ``supervise -`` in the executor's bookkeeping tests (any Python 3.11).

It reads its whole stdin (a workload: JSON with ``ti.task_id``) and records what it got in
``$FAKE_SUPERVISE_DIR``: ``<task_id>.stdin`` (the bytes), ``<task_id>.json`` (its pid, argv,
environment, whether stdin was a pipe). Then it behaves as ``ti.task_id`` says (up to its
first ``-``, so ``exit_0-large`` is an ``exit_0`` of another name):

=================  ==========================================================================
``exit_<n>``       exits with code ``n``
``killed``         kills itself with SIGKILL
``stops_on_term``  on SIGTERM exits 1 (as ``supervise`` does once it stopped and reported the
                   try); tells the test it is ready by opening the FIFO ``<task_id>.ready``
``ignores_term``   ignores SIGTERM; ready as above
``held``           ready as above, then exits with the code the test writes into the FIFO
                   ``<task_id>.release``
=================  ==========================================================================

The test makes the FIFOs before it starts the fake, so nothing here polls or sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys


def main() -> None:
    """Record what this process got, then behave as its workload's task id says."""
    data = sys.stdin.buffer.read()
    task_id = json.loads(data)["ti"]["task_id"]
    where = os.environ["FAKE_SUPERVISE_DIR"]
    with open(os.path.join(where, f"{task_id}.stdin"), "wb") as out:
        out.write(data)
    record = {
        "pid": os.getpid(),
        "argv": sys.argv,
        "env": dict(os.environ),
        "stdin_was_a_pipe": stat.S_ISFIFO(os.fstat(0).st_mode),
        "session_leader": os.getsid(0) == os.getpid(),
    }
    with open(os.path.join(where, f"{task_id}.json"), "w") as out:
        json.dump(record, out)
    behaviour = task_id.split("-")[0]
    if behaviour.startswith("exit_"):
        sys.exit(int(behaviour.removeprefix("exit_")))
    if behaviour == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if behaviour == "stops_on_term":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    elif behaviour == "ignores_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(where, f"{task_id}.ready"), "w"):
        pass  # opening it is the signal: the test's open for reading returns
    if behaviour == "held":
        with open(os.path.join(where, f"{task_id}.release")) as release:
            sys.exit(int(release.read().strip()))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
