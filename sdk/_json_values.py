"""Checking that a value is plain JSON before it goes on the wire.

msgspec would happily encode a ``datetime`` or a ``UUID`` as a string, and the task would then
pull back a different type than it pushed; so values the task stores are held to plain JSON.
"""

from __future__ import annotations

import math
from typing import Any

from sdk.errors import SdkError

__all__ = ["NotJsonError", "ensure_json"]


class NotJsonError(SdkError, TypeError):
    """A value that must be plain JSON is not. The message names the type and where it is.

    Also a ``TypeError``, which is what Python code expects of a value of the wrong type."""


def ensure_json(value: Any, what: str) -> None:
    """Raise :class:`NotJsonError` unless ``value`` is plain JSON.

    Plain JSON: ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists and tuples of
    plain JSON, dicts with ``str`` keys and plain JSON values. ``what`` names the value in the
    message, e.g. ``"XCom 'rows'"``.
    """
    problem = _find_problem(value, "", set())
    if problem is not None:
        where, reason = problem
        place = f" at {where}" if where else ""
        raise NotJsonError(f"{what} is not JSON-serialisable: {reason}{place}")


def _find_problem(value: Any, where: str, seen: set[int]) -> tuple[str, str] | None:
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"float {value!r} is not valid JSON")
    if isinstance(value, list | tuple | dict):
        if id(value) in seen:
            return (where, f"{type(value).__name__} contains itself")
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        return (where, f"dict key {key!r} of type {_name(key)} is not a str")
                    found = _find_problem(item, f"{where}[{key!r}]", seen)
                    if found is not None:
                        return found
            else:
                for index, item in enumerate(value):
                    found = _find_problem(item, f"{where}[{index}]", seen)
                    if found is not None:
                        return found
        finally:
            seen.discard(id(value))
        return None
    return (where, f"object of type {_name(value)}")


def _name(value: Any) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
