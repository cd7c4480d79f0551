"""The task log: one JSON object per line, Airflow 3's shape, masked.

Each record has ``timestamp`` (ISO-8601 UTC), ``level``, ``event`` and ``logger``:
``task.stdout`` / ``task.stderr`` for captured streams, ``task`` (or the task's own logger
name) for structured records, ``supervisor`` for the supervisor's own. Every string passes
through the :class:`~supervisor.masking.Masker` before it reaches the file.

Durability: records are batched in memory only within one pass of the relay loop, which
calls :meth:`TaskLog.flush` at the end of every pass; the supervisor's own records are
written through at once (they may come from worker threads, between passes). So a reader
tailing the file (Airflow's log view) sees each line as soon as the supervisor read it, and
a SIGKILL of the supervisor loses at most the records of the pass it was in.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
from typing import IO, Any

import msgspec

from supervisor.masking import Masker

__all__ = ["SUPERVISOR_LOGGERS", "StreamReassembler", "TaskLog", "task_logger", "utc_timestamp"]

#: A line longer than this (bytes, no newline yet) is written out in pieces rather than held.
MAX_PENDING_LINE = 1024 * 1024


def utc_timestamp() -> str:
    """Now as ISO-8601 UTC with a ``Z`` suffix, as Airflow 3 writes it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Loggers only the supervisor writes; a task's record naming one is filed under ``task.``.
SUPERVISOR_LOGGERS = frozenset({"supervisor", "task.stdout", "task.stderr", "task.metrics"})


def task_logger(name: str) -> str:
    """The logger a task's record is written under: never one that passes for ours."""
    return f"task.{name}" if name in SUPERVISOR_LOGGERS else name


class TaskLog:
    """Append-only JSON-lines log file of one task try."""

    def __init__(self, path: str, masker: Masker, *, echo: IO[str] | None = sys.stderr) -> None:
        self.path = path
        self.masker = masker
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # Append, as Airflow does: a resumed (deferred) try keeps its earlier segment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=256 * 1024)
        self._encoder = msgspec.json.Encoder()
        self._echo = echo  # None once a write to it failed
        self._lock = threading.Lock()  # API retries are logged from worker threads

    def lines(self, logger: str, level: str, lines: list[str]) -> None:
        """Write captured output lines (already split, without newlines)."""
        ts = utc_timestamp()
        data = self._encoder.encode_lines(
            [{"timestamp": ts, "level": level, "event": line, "logger": logger} for line in lines]
        )
        with self._lock:
            self._file.write(data)

    def record(
        self,
        logger: str,
        level: str,
        event: str,
        fields: dict[str, Any] | None = None,
        *,
        timestamp: str | dt.datetime | None = None,
    ) -> None:
        """Write one structured record; every string in it is masked.

        ``fields`` may not replace the four standard keys (a task's record cannot forge its
        ``logger`` or ``timestamp``): such keys are dropped.
        """
        body: dict[str, Any] = {
            "timestamp": timestamp or utc_timestamp(),
            "level": level,
            "event": self.masker.mask(event),
            "logger": self.masker.mask(logger),
        }
        for key, value in (fields or {}).items():
            if key not in body:
                # Names are the task's text too: a secret may sit in a field or logger name.
                body[self.masker.mask(key)] = self.masker.mask_value(value)
        data = self._encoder.encode(body) + b"\n"
        with self._lock:
            self._file.write(data)

    def supervisor(self, level: str, event: str, **fields: Any) -> None:
        """Write one of the supervisor's own records through to the file, and echo it to the
        executor's stderr."""
        self.record("supervisor", level, event, fields)
        self.flush()
        echo = self._echo
        if echo is None:
            return
        extra = " ".join(f"{k}={self.masker.mask_value(v)!r}" for k, v in fields.items())
        # The executor's stderr is a convenience copy: a closed pipe (`| head -1`), a full
        # disk or a closed fd must never change the try, whose record is the file.
        try:
            echo.write(f"supervise: {level}: {self.masker.mask(event)} {extra}".rstrip() + "\n")
            echo.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            self._echo = None
            self.record(
                "supervisor",
                "warning",
                "Cannot write to supervise's stderr; its records go to this log only",
                {"error": repr(exc)},
            )

    def flush(self) -> None:
        """Write buffered records to the file (the end of each relay loop pass calls it)."""
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._file.close()


class StreamReassembler:
    """Turns a captured stream's chunks into complete, masked lines for :class:`TaskLog`.

    A line split across reads (or a secret split across two ``write()`` calls) is held until
    its newline arrives, so masking always sees whole lines. A line longer than
    :data:`MAX_PENDING_LINE` is written in pieces rather than held without bound.
    """

    def __init__(self, log: TaskLog, logger: str, level: str) -> None:
        self._log = log
        self._logger = logger
        self._level = level
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        """Add bytes read from the stream."""
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > MAX_PENDING_LINE:
                whole = _complete_utf8(data)  # never split a character between pieces
                text = data[:whole].decode("utf-8", errors="replace")
                cut = self._log.masker.safe_cut(text)  # nor a secret
                self._emit_text(text[:cut])
                data = text[cut:].encode() + data[whole:]
            self._pending = data
            return
        self._pending = data[cut + 1 :]
        self._emit(data[:cut])

    def close(self) -> None:
        """Write a trailing line that had no newline."""
        if self._pending:
            self._emit(self._pending)
            self._pending = b""

    def _emit(self, data: bytes) -> None:
        self._emit_text(data.decode("utf-8", errors="replace"))

    def _emit_text(self, text: str) -> None:
        self._log.lines(self._logger, self._level, self._log.masker.mask(text).split("\n"))


def _complete_utf8(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: keep looking for the lead byte
            continue
        if byte >= 0xC0:  # a lead byte: is its character complete?
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if size > back:
                return len(data) - back
        break
    return len(data)
