"""``Variable``: read and write the orchestrator's variables through the supervisor."""

from __future__ import annotations

from typing import Any, TypeVar, overload

from comms.messages import (
    DeleteVariable,
    ErrorCode,
    GetVariable,
    OKResponse,
    PutVariable,
    VariableResult,
)
from sdk import _session
from sdk._missing import MISSING
from sdk.errors import VariableNotFound

__all__ = ["Variable"]

T = TypeVar("T")


class Variable:
    """The orchestrator's variables (string values), read and written via the supervisor."""

    @overload
    @staticmethod
    def get(key: str) -> str: ...

    @overload
    @staticmethod
    def get(key: str, default: T) -> str | T: ...

    @staticmethod
    def get(key: str, default: Any = MISSING) -> Any:
        """Return the value of variable ``key``.

        A missing variable (or one whose value is null) returns ``default`` if given, else
        raises :class:`~sdk.errors.VariableNotFound`.
        """
        try:
            result = _session.call("Variable.get()", GetVariable(id=0, key=key), VariableResult)
        except VariableNotFound:
            if default is MISSING:
                raise
            return default
        if result.value is None:
            if default is MISSING:
                raise VariableNotFound(
                    ErrorCode.VARIABLE_NOT_FOUND, {"key": key, "message": "variable has no value"}
                )
            return default
        return result.value

    @staticmethod
    def set(key: str, value: str, description: str | None = None) -> None:
        """Create or replace variable ``key`` with the string ``value``."""
        if not isinstance(value, str):
            raise TypeError(
                f"Variable.set({key!r}, ...) needs a str value, got {type(value).__name__}: "
                "serialise it first (e.g. json.dumps)"
            )
        _session.call(
            "Variable.set()",
            PutVariable(id=0, key=key, value=value, description=description),
            OKResponse,
        )

    @staticmethod
    def delete(key: str) -> None:
        """Delete variable ``key``."""
        _session.call("Variable.delete()", DeleteVariable(id=0, key=key), OKResponse)
