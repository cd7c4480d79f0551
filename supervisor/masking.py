"""Secret masking, done by the supervisor on every output path of the task.

The supervisor saw every secret it handed to the task (connection passwords and extras,
sensitive variables, the token) and every value the task registered with ``MaskSecret``; each
is replaced by ``***`` in everything written to the task log. Values shorter than
:data:`MIN_SECRET_LENGTH` are not masked: masking ``"a"`` or ``"1234"`` would shred every line
while protecting nothing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "MIN_SECRET_LENGTH", "SENSITIVE_KEY_PARTS", "Masker", "is_sensitive_key"]

MASK = "***"
MIN_SECRET_LENGTH = 5

#: A variable or field whose name contains one of these (case-insensitive) holds a secret.
SENSITIVE_KEY_PARTS = (
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
    "credential",
)


def is_sensitive_key(name: str) -> bool:
    """Whether a variable or field called ``name`` holds a secret."""
    lowered = name.lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


class Masker:
    """Replaces every registered secret in text and in JSON-like values."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()  # relay workers register while the loop masks

    def __len__(self) -> int:
        return len(self._secrets)

    def add(self, value: Any) -> None:
        """Register ``value``; for dicts and lists, every string inside (under any key)."""
        new = {s for s in _strings(value) if len(s) >= MIN_SECRET_LENGTH} - self._secrets
        if new:
            with self._lock:
                self._secrets |= new
                self._pattern = None

    def add_token(self, token: str) -> None:
        """Register a JWT, and its signature alone: printed apart, that is the secret part."""
        self.add(token)
        self.add(token.rsplit(".", 1)[-1])

    def mask(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``."""
        pattern = self._compiled()
        return text if pattern is None else pattern.sub(MASK, text)

    def safe_cut(self, text: str) -> int:
        """Where ``text``, the start of a longer line, may be cut so that no secret is split:
        the cut is before any secret it would cross and before the last characters that
        could begin one continuing past the end of ``text``."""
        pattern = self._compiled()
        if pattern is None:
            return len(text)
        with self._lock:  # relay workers may be adding secrets
            longest = max(map(len, self._secrets))
        cut = max(0, len(text) - longest + 1)
        for match in pattern.finditer(text, max(0, cut - longest)):
            if match.start() < cut < match.end():
                return match.start()
        return cut

    def _compiled(self) -> re.Pattern[str] | None:
        pattern = self._pattern
        if pattern is None:
            if not self._secrets:
                return None
            with self._lock:
                # Longest first, so a secret containing another is replaced whole.
                alternatives = sorted(self._secrets, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(map(re.escape, alternatives)))
        return pattern

    def mask_value(self, value: Any) -> Any:
        """Return a copy of a JSON-like value with secrets masked in every string."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask(str(k)): self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(v) for v in value]
        return value


def _strings(value: Any, depth: int = 0) -> Iterable[str]:
    if depth > 8:  # a hostile task may register deeply nested values
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item, depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
