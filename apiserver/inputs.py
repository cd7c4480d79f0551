"""Reading request inputs (body, query parameters) with FastAPI-shaped 422 errors."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from apiserver.responses import validation_error, validation_error_from_msgspec

__all__ = ["decode_body", "json_body", "query_bool", "query_int"]

T = TypeVar("T")

_decoders: dict[object, msgspec.json.Decoder[object]] = {}


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def json_body(request: Request) -> bytes:
    """The request body, or a 422 unless it was sent as ``Content-Type: application/json``.

    Airflow's FastAPI app refuses a JSON body sent without a JSON content type; so do we.
    """
    if not _is_json(request.headers.get("content-type", "")):
        raise validation_error(
            ["body"],
            "Input should be a valid dictionary or object to extract fields from "
            "(send the body as Content-Type: application/json)",
            "model_attributes_type",
        )
    return await request.body()


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
