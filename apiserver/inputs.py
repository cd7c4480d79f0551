"""Reading request inputs (body, query parameters) with FastAPI-shaped 422 errors."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from apiserver.responses import validation_error, validation_error_from_msgspec

__all__ = ["decode_body", "query_bool", "query_int"]

T = TypeVar("T")

_decoders: dict[object, msgspec.json.Decoder[object]] = {}


def decode_body(body: bytes, type_: type[T]) -> T:
    """Decode a JSON body into ``type_``, or raise a 422 naming the bad field."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(body)  # type: ignore[return-value]
    except msgspec.MsgspecError as exc:
        raise validation_error_from_msgspec(exc) from exc


def query_int(request: Request, name: str, default: int) -> int:
    """The integer query parameter ``name`` (``default`` when absent), or a 422."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise validation_error(
            ["query", name],
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ) from exc


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def query_bool(request: Request, name: str, default: bool) -> bool:
    """The boolean query parameter ``name`` (pydantic's spellings), or a 422."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise validation_error(
        ["query", name],
        "Input should be a valid boolean, unable to interpret input",
        "bool_parsing",
    )
