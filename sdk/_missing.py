"""The marker for "no default given", distinct from ``None``."""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["MISSING", "Missing"]


class Missing(enum.Enum):
    """Type of :data:`MISSING`."""

    MISSING = enum.auto()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = Missing.MISSING
