"""The errors of taskvisor, drawn once.

Every exception taskvisor raises derives from :class:`TaskvisorError`; each package defines
the branch it owns, and users catch what they can name::

    TaskvisorError                      comms.errors
    ├── ProtocolError                   the task channel contract was broken (abstract)
    │   ├── TaskProtocolError           ... by the task: bad JSON, unknown type, no id, too long
    │   └── SupervisorProtocolError     ... by the supervisor: unknown id, bad response
    ├── ActivityError                   comms.activity: invalid activity or Airflow workload
    │   │                               (comms.workload; supervise exits 2)
    │   └── AirflowConfigError          supervisor.airflow_config: a worker setting supervise
    │                                   cannot use ([core] execution_api_server_url, ...)
    ├── ApiError                        supervisor.errors: an Execution API call failed
    │   ├── ServerUnreachable           connection errors or 5xx after every retry (transient)
    │   ├── TLSError                    certificate refused, or the URL's scheme does not match
    │   │                               the port (not transient: never retried)
    │   └── ServerResponseError         the server answered 4xx: ``status`` and ``detail``
    │       ├── Unauthorized            401 / 403: missing, bad or foreign token
    │       ├── NotFound                404
    │       ├── Conflict                409: not runnable, running elsewhere
    │       └── Gone                    410: the task instance was cleared
    ├── TransportError                  supervisor.http: one request/answer exchange failed
    │   │                               (retried by the client; ServerUnreachable after its
    │   │                               budget; the two TLS failures: TLSError, at once)
    │   ├── ConnectError                refused, unreachable, unknown name, TLS handshake
    │   │   ├── CertificateError        the server's certificate failed verification
    │   │   └── TLSMismatchError        only one side speaks TLS: https:// vs http:// URL
    │   ├── Timeout                     ConnectTimeout, ReadTimeout, WriteTimeout
    │   └── NetworkError, RemoteProtocolError
    └── SdkError                        sdk.errors: an SDK call failed inside the task
        ├── NotJsonError                a value to store is not plain JSON (also a TypeError)
        ├── NotInSupervisorError        SDK used outside a supervised task
        ├── ChannelClosedError          the supervisor went away
        └── RequestFailed               the supervisor answered ErrorResponse: ``code``, ``detail``
            ├── VariableNotFound, ConnectionNotFound, XComNotFound

    TaskOutcome (BaseException)         sdk.outcomes: how task code ends a try early
    ├── Skip                            -> skipped
    ├── Fail                            -> failed, no retry
    ├── Defer                           -> deferred
    └── Reschedule                      -> up_for_reschedule

``TaskOutcome`` derives from ``BaseException`` so that a task's broad ``except Exception``
cannot swallow a deliberate outcome.
"""

from __future__ import annotations

__all__ = [
    "ProtocolError",
    "SupervisorProtocolError",
    "TaskProtocolError",
    "TaskvisorError",
]


class TaskvisorError(Exception):
    """Base class of every error taskvisor raises."""


class ProtocolError(TaskvisorError):
    """The task channel contract was broken; a subclass says by whom.

    ``code`` is the ``ErrorResponse`` code a peer receives for it.
    """

    code: str = "PROTOCOL_ERROR"

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError(
                "ProtocolError is abstract: raise TaskProtocolError or SupervisorProtocolError"
            )
        super().__init__(message)


class TaskProtocolError(ProtocolError):
    """The task sent something the protocol does not allow."""


class SupervisorProtocolError(ProtocolError):
    """The supervisor sent something the protocol does not allow."""
