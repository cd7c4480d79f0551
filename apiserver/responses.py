"""Response bodies in FastAPI's (so Airflow's) shapes, encoded with msgspec.

Errors are ``{"detail": ...}``: a string, or an object with ``reason`` and ``message``.
Validation failures are 422 ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` with
``loc`` naming where the bad value is (``["body", "pid"]``, ``["query", "map_index"]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

__all__ = [
    "ApiError",
    "json_response",
    "not_found",
    "validation_error",
    "validation_error_from_msgspec",
]

_encoder = msgspec.json.Encoder()


def json_response(
    body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` (anything msgspec encodes, incl. ``msgspec.Raw``) as an ``application/json``."""
    return Response(
        _encoder.encode(body), status_code, headers=headers, media_type="application/json"
    )


class ApiError(Exception):
    """An error answer: raised by a route, turned into ``{"detail": detail}`` with ``status``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail

    def response(self) -> Response:
        """This error as a response."""
        return json_response({"detail": self.detail}, self.status)


def not_found(message: str) -> ApiError:
    """404 with Airflow's ``{"reason": "not_found", "message": ...}`` detail."""
    return ApiError(404, {"reason": "not_found", "message": message})


def validation_error(loc: list[str | int], msg: str, type_: str) -> ApiError:
    """422 for one invalid input at ``loc``."""
    return ApiError(422, [{"loc": loc, "msg": msg, "type": type_}])


# msgspec says where a bad value is as a JSON path suffix: "... - at `$.a[0].b`".
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>\d+)\]")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def validation_error_from_msgspec(exc: msgspec.MsgspecError, where: str = "body") -> ApiError:
    """422 for a body (or other input) msgspec refused, with ``loc`` parsed from its message."""
    message = str(exc)
    loc: list[str | int] = [where]
    at = _AT_PATH.search(message)
    if at:
        message = message[: at.start()]
        for part in _PATH_PART.finditer(at.group("path")):
            index = part.group("index")
            loc.append(int(index) if index is not None else part.group("name"))
    # ValidationError subclasses DecodeError: test for it first.
    if not isinstance(exc, msgspec.ValidationError):
        return validation_error(loc, f"JSON decode error: {message}", "json_invalid")
    missing = _MISSING.match(message)
    if missing:
        loc.append(missing.group("field"))
        return validation_error(loc, "Field required", "missing")
    return validation_error(loc, message, "value_error")
