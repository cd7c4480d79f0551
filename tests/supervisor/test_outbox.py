"""supervisor.outbox: messages to the task never block the loop, and none is lost or split."""

from __future__ import annotations

import os
import selectors

from comms.framing import from_supervisor_decoder
from comms.messages import OKResponse
from supervisor.outbox import Outbox


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def test_what_the_pipe_cannot_take_waits_and_is_written_when_the_selector_says_so():
    read_fd, write_fd = _pipe()
    selector = selectors.DefaultSelector()
    outbox = Outbox(write_fd, selector)
    count = 20_000  # ~17 bytes a line: several pipe buffers' worth

    for i in range(count):
        outbox.send(OKResponse(id=i))

    assert write_fd in selector.get_map()  # the pipe filled: the loop is asked to wait for it
    decoder = from_supervisor_decoder()
    received = []
    while len(received) < count:
        for key, _ in selector.select(timeout=0):
            key.data(key.fd)
        decoder.feed(os.read(read_fd, 65536))
        while (event := decoder.next_event()) is not None:
            received.append(event)
    assert [m.id for m in received] == list(range(count))
    assert write_fd not in selector.get_map()  # everything written: nothing left to wait for
    os.close(read_fd)
    os.close(write_fd)


def test_once_the_task_closed_its_end_nothing_is_queued_and_nothing_raises():
    read_fd, write_fd = _pipe()
    outbox = Outbox(write_fd, selectors.DefaultSelector())
    os.close(read_fd)

    outbox.send(OKResponse(id=1))
    outbox.send(OKResponse(id=2))

    assert not outbox.open
    os.close(write_fd)
