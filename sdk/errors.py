"""The ``SdkError`` branch of taskvisor's error tree (drawn in :mod:`comms.errors`).

::

    SdkError                    an SDK call failed inside the task
    ├── NotJsonError            a value to store is not plain JSON (also a TypeError)
    ├── NotInSupervisorError    SDK used outside a supervised task
    ├── ChannelClosedError      the supervisor went away
    └── RequestFailed           the supervisor answered ErrorResponse: ``code``, ``detail``
        ├── VariableNotFound
        ├── ConnectionNotFound
        └── XComNotFound
"""

from __future__ import annotations

from typing import Any

from comms.errors import TaskvisorError
from comms.messages import ErrorCode, ErrorResponse

__all__ = [
    "ChannelClosedError",
    "ConnectionNotFound",
    "NotInSupervisorError",
    "RequestFailed",
    "SdkError",
    "VariableNotFound",
    "XComNotFound",
    "request_failed",
]


class SdkError(TaskvisorError):
    """An SDK call failed inside the task."""


class NotInSupervisorError(SdkError):
    """An SDK call was made outside a supervised task (and outside ``sdk.testing``)."""


class ChannelClosedError(SdkError):
    """The channel to the supervisor is closed: the supervisor went away."""


class RequestFailed(SdkError):
    """The supervisor answered a request with an ``ErrorResponse``.

    ``code`` is the :class:`~comms.messages.ErrorCode`; ``detail`` the response's detail.
    """

    def __init__(self, code: ErrorCode, detail: dict[str, Any] | None = None) -> None:
        self.code = code
        self.detail: dict[str, Any] = dict(detail or {})
        super().__init__(_describe(code, self.detail))


class VariableNotFound(RequestFailed):
    """The variable does not exist (or is not visible to this task)."""


class ConnectionNotFound(RequestFailed):
    """The connection does not exist (or is not visible to this task)."""


class XComNotFound(RequestFailed):
    """No XCom matches the requested task, key, dag run and map index."""


_BY_CODE: dict[ErrorCode, type[RequestFailed]] = {
    ErrorCode.VARIABLE_NOT_FOUND: VariableNotFound,
    ErrorCode.CONNECTION_NOT_FOUND: ConnectionNotFound,
    ErrorCode.XCOM_NOT_FOUND: XComNotFound,
}


def request_failed(response: ErrorResponse) -> RequestFailed:
    """The exception that stands for ``response``: the subclass named by its code."""
    return _BY_CODE.get(response.error, RequestFailed)(response.error, response.detail)


def _describe(code: ErrorCode, detail: dict[str, Any]) -> str:
    if not detail:
        return str(code)
    parts = ", ".join(f"{name}={value!r}" for name, value in detail.items())
    return f"{code}: {parts}"
