"""The supervisor's branch of the error tree drawn in :mod:`comms.errors`.

:class:`ActivityError` is defined in :mod:`comms.activity`, next to the one validator that
the reference server shares, and re-exported here.
"""

from __future__ import annotations

from typing import Any

from comms.activity import ActivityError
from comms.errors import TaskvisorError

__all__ = [
    "ActivityError",
    "ApiError",
    "Conflict",
    "Gone",
    "NotFound",
    "ServerResponseError",
    "ServerUnreachable",
    "TLSError",
    "Unauthorized",
]


class ApiError(TaskvisorError):
    """An Execution API call failed."""


class ServerUnreachable(ApiError):
    """No usable answer within the retry budget: connection errors, timeouts or 5xx.

    Transient: the same call may succeed later.
    """

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class TLSError(ApiError):
    """TLS with the server cannot work, so the call was not retried: the server's certificate
    failed verification, or the URL's scheme does not match the port (``https://`` at a
    plain-HTTP port, ``http://`` at a TLS one). Not transient: the configuration must change.

    ``attempts`` counts the attempts made, the last one failing this way.
    """

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class ServerResponseError(ApiError):
    """The server answered with a 4xx status; ``detail`` is its ``{"detail": ...}``."""

    def __init__(self, method: str, path: str, status: int, detail: Any) -> None:
        super().__init__(f"{method} {path} -> {status}: {detail}")
        self.status = status
        self.detail = detail

    @staticmethod
    def for_status(method: str, path: str, status: int, detail: Any) -> ServerResponseError:
        """Return the most specific subclass for ``status``."""
        cls = _BY_STATUS.get(status, ServerResponseError)
        return cls(method, path, status, detail)


class Unauthorized(ServerResponseError):
    """401 or 403: missing, invalid, expired or foreign token."""


class NotFound(ServerResponseError):
    """404."""


class Conflict(ServerResponseError):
    """409: the task instance is not in a state that allows the call."""


class Gone(ServerResponseError):
    """410: the task instance was cleared while running."""


_BY_STATUS: dict[int, type[ServerResponseError]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    410: Gone,
}
