"""Messages to the task: encoded, queued, and written without ever blocking the relay loop.

The task may be slow to read its channel (or never read it). What does not fit in the pipe
waits here, and the loop's selector is asked to say when the pipe can take more. Once the
task closed its end, nobody listens: what was queued is dropped and later messages too.
"""

from __future__ import annotations

import os
import selectors

import msgspec

from comms.framing import encode

__all__ = ["Outbox"]


class Outbox:
    """The supervisor's side of the task's channel (the loop thread's only)."""

    def __init__(self, fd: int, selector: selectors.BaseSelector) -> None:
        self._fd = fd
        self._selector = selector
        self._pending = bytearray()
        #: False once the task closed its end of the channel.
        self.open = True

    def send(self, message: msgspec.Struct) -> None:
        """Queue ``message`` as one line and write as much as the pipe takes now."""
        self.send_bytes(encode(message))

    def send_bytes(self, data: bytes) -> None:
        """Queue encoded ``data`` (a line, a frame) and write as much as the pipe takes now."""
        if self.open:
            self._pending += data
            self.flush()

    def flush(self) -> None:
        """Write what is queued; register for the pipe's writability if some is left."""
        try:
            while self._pending:
                written = os.write(self._fd, self._pending)
                del self._pending[:written]
        except BlockingIOError:
            if self._fd not in self._selector.get_map():
                self._selector.register(self._fd, selectors.EVENT_WRITE, lambda _fd: self.flush())
            return
        except OSError:  # EPIPE and the like: the task closed its end
            self.open = False
            self._pending.clear()
        if self._fd in self._selector.get_map():
            self._selector.unregister(self._fd)
