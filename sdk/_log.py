"""``log``: structured task logging, and the bridge from stdlib ``logging``.

Each call sends one ``Log`` notification; the supervisor masks it and writes it to the task
log. Field values that are not JSON are sent as their ``repr``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any, Literal

import msgspec

from comms.messages import Log
from sdk import _session

__all__ = ["LogHandler", "TaskLog", "format_exception", "log"]

Level = Literal["debug", "info", "warning", "error", "critical"]


class TaskLog:
    """Structured logging to the task log: ``log.info("event", key=value, ...)``."""

    def __init__(self, logger: str = "task") -> None:
        self._logger = logger

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level debug."""
        self._send("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level info."""
        self._send("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level warning."""
        self._send("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level error."""
        self._send("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level critical."""
        self._send("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level error with the exception being handled in ``exception``."""
        exc = sys.exc_info()[1]
        if exc is not None:
            fields["exception"] = format_exception(exc)
        self._send("error", event, fields)

    def _send(self, level: Level, event: str, fields: dict[str, Any]) -> None:
        _session.notify(f"log.{level}()", _record(level, event, self._logger, fields))


#: The task's structured logger.
log = TaskLog()


class LogHandler(logging.Handler):
    """Sends stdlib ``logging`` records to the task log as ``Log`` notifications."""

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record``; formatting errors go to ``handleError`` like any handler's."""
        try:
            fields: dict[str, Any] = {}
            if record.exc_info and record.exc_info[1] is not None:
                fields["exception"] = format_exception(record.exc_info[1])
            elif record.exc_text:
                fields["exception"] = record.exc_text
            message = _record(_level_name(record.levelno), record.getMessage(), record.name, fields)
            session = _session.active()
            if session is not None:
                session.notify(message)
        except Exception:
            self.handleError(record)


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` as text, as Python prints it."""
    import traceback

    return "".join(traceback.format_exception(exc))


def _level_name(levelno: int) -> Level:
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def _record(level: Level, event: str, logger: str, fields: dict[str, Any]) -> Log:
    return Log(
        event=str(event),
        level=level,
        logger=logger,
        timestamp=dt.datetime.now(dt.UTC),
        fields=msgspec.to_builtins(fields, enc_hook=repr, str_keys=True) if fields else {},
    )
