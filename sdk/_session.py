"""Who answers SDK calls: the channel to a real supervisor, or ``sdk.testing``'s fake.

Both implement :class:`Session`. The runner (or ``fake_supervisor``) installs one for the
whole process, not per thread: every thread of a task talks to the same supervisor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar

from comms.errors import SupervisorProtocolError
from comms.messages import ErrorResponse, Log, Metric, Request, Response
from sdk.errors import NotInSupervisorError, request_failed

if TYPE_CHECKING:
    from sdk.context import Context

__all__ = ["Session", "active", "call", "current", "installed", "notify"]

R = TypeVar("R", bound=Response)


class Session(Protocol):
    """What the SDK talks to."""

    @property
    def context(self) -> Context:
        """The context of the running task."""
        ...

    def request(self, message: Request) -> Response:
        """Send ``message`` (its ``id`` is chosen here) and return its response."""
        ...

    def notify(self, message: Log | Metric) -> None:
        """Send a notification; there is no response."""
        ...


_current: Session | None = None


def active() -> Session | None:
    """The installed session, or ``None`` outside a supervised task."""
    return _current


def current(operation: str) -> Session:
    """The installed session; raises :class:`NotInSupervisorError` naming ``operation``."""
    session = _current
    if session is None:
        raise NotInSupervisorError(
            f"{operation} was called outside a supervised task: run the task under "
            "`supervise`, or wrap unit tests in `sdk.testing.fake_supervisor()`"
        )
    return session


@contextmanager
def installed(session: Session) -> Iterator[Session]:
    """Make ``session`` answer SDK calls inside the ``with`` block."""
    global _current
    previous, _current = _current, session
    try:
        yield session
    finally:
        _current = previous


def call(operation: str, message: Request, expected: type[R]) -> R:
    """Send ``message`` and return its result of type ``expected``.

    ``ErrorResponse`` raises the matching :class:`~sdk.errors.RequestFailed` subclass.
    """
    response = current(operation).request(message)
    if isinstance(response, expected):
        return response
    if isinstance(response, ErrorResponse):
        raise request_failed(response)
    raise SupervisorProtocolError(
        f"{operation}: expected {expected.__name__} from the supervisor, "
        f"got {type(response).__name__}"
    )


def notify(operation: str, message: Log | Metric) -> None:
    """Send a notification through the installed session."""
    current(operation).notify(message)
