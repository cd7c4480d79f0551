"""Secret masking, done by the supervisor on every output path of the task.

The supervisor saw every secret it handed to the task (connection passwords and extras,
sensitive variables, the token) and every value the task registered with ``MaskSecret``; each
is replaced by ``***`` in everything written to the task log. Values shorter than
:data:`MIN_SECRET_LENGTH` are not masked: masking ``"a"`` or ``"1234"`` would shred every line
while protecting nothing.

Matching: all secrets are found in one pass of an Aho-Corasick automaton (``ahocorasick_rs``,
a binding of Rust's ``aho-corasick``), so masking a line costs the same with ten secrets or a
hundred thousand. Matches are leftmost-longest: where secrets overlap, the longest one starting
first is replaced whole. Secrets registered a few at a time while the task runs go into small
automatons that are merged as they grow (each at least four times the size of the next), so
building costs O(n log n) in the secret text instead of a full rebuild per registration; spans
found by two automatons that overlap are replaced by one ``***``.

Limits: what a task registers itself (``MaskSecret``, and values it sets on variables with
sensitive names) is capped per try by :data:`MAX_TASK_SECRET_BYTES`,
:data:`MAX_TASK_SECRETS_BYTES` and :data:`MAX_TASK_SECRETS`, because the automaton costs
memory in proportion to the secret text (about 15 bytes per byte, 55 while it is built).
Secrets the supervisor registers from the activity and the server are not capped: refusing
one would leak it, and their size is the server's.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec
from ahocorasick_rs import AhoCorasick, Implementation, MatchKind

__all__ = [
    "MASK",
    "MAX_TASK_SECRETS",
    "MAX_TASK_SECRETS_BYTES",
    "MAX_TASK_SECRET_BYTES",
    "MIN_SECRET_LENGTH",
    "SENSITIVE_KEY_PARTS",
    "Masker",
    "is_sensitive_key",
]

MASK = "***"
MIN_SECRET_LENGTH = 5

#: The longest secret (UTF-8 bytes) a task may register: a PEM key is ~3 KiB.
MAX_TASK_SECRET_BYTES = 64 * 1024
#: The secret text (UTF-8 bytes, distinct secrets) a task may register in one try.
MAX_TASK_SECRETS_BYTES = 256 * 1024
#: The distinct secrets a task may register in one try.
MAX_TASK_SECRETS = 10_000

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

# An automaton is merged with the next smaller one unless it is this many times its size...
_MERGE_RATIO = 4
# ...or when it is this small (characters): rebuilding 4 KiB takes well under a millisecond,
# and most tries then keep one automaton, scanned once per line.
_SMALL_LEVEL = 4096

# Lone surrogates (OS data decoded with surrogateescape) cannot be encoded for the automaton;
# a string, not a compiled pattern: ``re`` compiles it on first use (start-up time).
_SURROGATES = "[\ud800-\udfff]"


def is_sensitive_key(name: str) -> bool:
    """Whether a variable or field called ``name`` holds a secret."""
    lowered = name.lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


class _Level(NamedTuple):
    """One automaton and the secrets it was built from (to rebuild it merged)."""

    automaton: AhoCorasick
    secrets: list[str]
    size: int


class _Matcher(NamedTuple):
    """What masking reads: replaced whole on each registration, so readers need no lock."""

    levels: tuple[_Level, ...]
    longest: int

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The ``[start, end)`` spans of ``text`` to replace, in order, not overlapping."""
        try:
            found = [
                m for level in self.levels for m in level.automaton.find_matches_as_indexes(text)
            ]
        except UnicodeEncodeError:
            return self.spans(_searchable(text))  # same length, so the spans still fit ``text``
        if len(self.levels) == 1:
            return [(start, end) for _, start, end in found]
        merged: list[tuple[int, int]] = []
        for _, start, end in sorted(found, key=lambda m: m[1]):
            if merged and start < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged


class Masker:
    """Replaces every registered secret in text and in JSON-like values."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._matcher: _Matcher | None = None
        self._task_secrets = 0
        self._task_bytes = 0
        self._lock = threading.Lock()  # relay workers register while the loop masks

    def __len__(self) -> int:
        return len(self._secrets)

    def add(self, value: Any) -> None:
        """Register ``value``; for dicts and lists, every string inside (under any key)."""
        with self._lock:
            self._register(self._new_secrets(value))

    def add_connection(self, password: str | None, extra: str | None) -> None:
        """Register a connection's secrets: its password, and its extra whole and (when it
        is JSON) every string inside it."""
        self.add(password)
        if extra:
            self.add(extra)
            with contextlib.suppress(msgspec.DecodeError):  # not JSON: masked as one string
                self.add(msgspec.json.decode(extra))

    def add_task_secret(self, value: Any) -> str | None:
        """Register ``value``, which the task supplied, within the try's limits.

        Returns None once registered, or why it was refused; a refused value registers none of
        its strings (strings registered before, by anyone, cost nothing).
        """
        with self._lock:
            new = self._new_secrets(value)
            sizes = [len(s.encode()) for s in new]
            longest = max(sizes, default=0)
            total = sum(sizes)
            if longest > MAX_TASK_SECRET_BYTES:
                return (
                    f"a secret may be at most {MAX_TASK_SECRET_BYTES} bytes "
                    f"(MAX_TASK_SECRET_BYTES); this one has {longest}"
                )
            if self._task_secrets + len(new) > MAX_TASK_SECRETS:
                return (
                    f"a task may register at most {MAX_TASK_SECRETS} secrets per try "
                    f"(MAX_TASK_SECRETS); it has {self._task_secrets} and this adds {len(new)}"
                )
            if self._task_bytes + total > MAX_TASK_SECRETS_BYTES:
                return (
                    f"a task may register at most {MAX_TASK_SECRETS_BYTES} bytes of secrets per "
                    f"try (MAX_TASK_SECRETS_BYTES); it has {self._task_bytes} and this adds "
                    f"{total}"
                )
            self._task_secrets += len(new)
            self._task_bytes += total
            self._register(new)
        return None

    def add_token(self, token: str) -> None:
        """Register a JWT, and its signature alone: printed apart, that is the secret part."""
        self.add(token)
        self.add(token.rsplit(".", 1)[-1])

    def mask(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``."""
        matcher = self._matcher
        if matcher is None:
            return text
        spans = matcher.spans(text)
        if not spans:
            return text
        pieces = []
        last = 0
        for start, end in spans:
            pieces.append(text[last:start])
            pieces.append(MASK)
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def safe_cut(self, text: str) -> int:
        """Where ``text``, the start of a longer line, may be cut so that no secret is split:
        the cut is before any secret it would cross and before the last characters that
        could begin one continuing past the end of ``text``."""
        matcher = self._matcher
        if matcher is None:
            return len(text)
        longest = matcher.longest
        cut = max(0, len(text) - longest + 1)
        offset = max(0, cut - longest)
        for start, end in matcher.spans(text[offset:]):
            if start + offset < cut < end + offset:
                return start + offset
        return cut

    def mask_value(self, value: Any) -> Any:
        """Return a copy of a JSON-like value with secrets masked in every string."""
        if self._matcher is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask(str(k)): self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(v) for v in value]
        return value

    def _new_secrets(self, value: Any) -> list[str]:
        """The strings in ``value`` long enough to mask and not registered yet (call locked)."""
        new = (_searchable(s) for s in _strings(value) if len(s) >= MIN_SECRET_LENGTH)
        return [s for s in dict.fromkeys(new) if s not in self._secrets]

    def _register(self, new: list[str]) -> None:
        """Add ``new`` as one automaton, merged with the smaller ones it outgrows (locked)."""
        if not new:
            return
        self._secrets.update(new)
        old = self._matcher
        longest = max(map(len, new))
        if old is not None:
            longest = max(longest, old.longest)
        levels = list(old.levels) if old else []
        size = sum(map(len, new))
        while levels and levels[-1].size < max(_MERGE_RATIO * size, _SMALL_LEVEL):
            smaller = levels.pop()
            new = smaller.secrets + new
            size += smaller.size
        levels.append(_Level(_automaton(new), new, size))
        self._matcher = _Matcher(tuple(levels), longest)


def _automaton(secrets: Sequence[str]) -> AhoCorasick:
    # Contiguous NFA, named: for a few long patterns the library would pick a DFA, which took
    # 286 MB for 16 secrets of 64 KiB (this takes ~55 MB while built, ~15 MB after).
    return AhoCorasick(
        secrets,
        matchkind=MatchKind.LeftmostLongest,
        store_patterns=False,
        implementation=Implementation.ContiguousNFA,
    )


def _searchable(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (length kept)."""
    return text if text.isascii() else re.sub(_SURROGATES, "\ufffd", text)


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
