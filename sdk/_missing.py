"""The marker for "no default given", distinct from ``None``."""

from __future__ import annotations

import enum
from typing import Final, Literal

__all__ = ["MISSING", "Missing", "MissingType"]


class Missing(enum.Enum):
    """Type of :data:`MISSING`."""

    MISSING = enum.auto()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = Missing.MISSING
MissingType = Literal[Missing.MISSING]
