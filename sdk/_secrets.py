"""``mask_secret``: have the supervisor mask a value in every output of this task."""

from __future__ import annotations

from typing import Any

from comms.messages import MaskSecret, OKResponse
from sdk import _session
from sdk._json_values import ensure_json

__all__ = ["mask_secret"]


def mask_secret(value: Any, name: str | None = None) -> None:
    """Mask ``value`` (a string, or a JSON structure of strings) in all task output.

    Returns once the supervisor has confirmed, so output written afterwards is masked.
    ``name`` optionally says what the secret is (e.g. the variable's key).
    """
    ensure_json(value, "the secret to mask")
    _session.call("mask_secret()", MaskSecret(id=0, value=value, name=name), OKResponse)
