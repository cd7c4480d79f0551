"""Answers from pushed values, the same on both sides of the channel (sans-IO).

In push mode the executor pre-injects variables and connections with the activity. The
supervisor sends them to the task in :class:`~comms.messages.StartupDetails`, so the Python
SDK answers ``Variable.get`` and ``Connection.get`` for them without a round trip; the
supervisor answers the same requests from the same values for a task that asks anyway.

The values follow the task's own writes: once the server accepted a ``PutVariable`` for a
pushed key, reads return the new value; once it accepted a ``DeleteVariable``, the key is no
longer pushed and reads go to the server.
"""

from __future__ import annotations

from comms.messages import (
    ConnectionResult,
    DeleteVariable,
    GetConnection,
    GetVariable,
    OKResponse,
    PushedValues,
    PutVariable,
    Request,
    Response,
    VariableResult,
)

__all__ = ["PushedAnswers"]


class PushedAnswers:
    """Answers :class:`GetVariable` and :class:`GetConnection` from pushed values."""

    def __init__(self, pushed: PushedValues | None) -> None:
        self._variables = dict(pushed.variables) if pushed else {}
        self._connections = {c.conn_id: c for c in pushed.connections} if pushed else {}

    def answer(self, request: Request) -> VariableResult | ConnectionResult | None:
        """The answer to ``request`` if pushed values hold it, else ``None``."""
        if isinstance(request, GetVariable):
            value = self._variables.get(request.key)
            if value is not None:
                return VariableResult(id=request.id, key=request.key, value=value)
        elif isinstance(request, GetConnection):
            conn = self._connections.get(request.conn_id)
            if conn is not None:
                return ConnectionResult.of(request.id, conn)
        return None

    def learn(self, request: Request, response: Response) -> None:
        """Follow a variable write the server accepted (``response`` is its answer)."""
        if not isinstance(response, OKResponse):
            return
        if isinstance(request, PutVariable) and request.key in self._variables:
            self._variables[request.key] = request.value
        elif isinstance(request, DeleteVariable):
            self._variables.pop(request.key, None)
