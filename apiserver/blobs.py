"""Large XCom values as files beside the database, so the event loop never copies them.

Writing a 100 MB value into SQLite takes about a second with the write lock held, which
would stall every other request (heartbeats of other tasks included). Values above
:data:`INLINE_LIMIT` are therefore written to ``<db file>.blobs/<name>`` in a worker thread
and the ``xcoms`` row only names the file; reads stream the file back in chunks, also off the
event loop. Files are written under a temporary name and renamed, so a reader never sees half
a value.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO

__all__ = ["INLINE_LIMIT", "READ_CHUNK", "BlobStore"]

#: Values up to this many bytes stay in the database row.
INLINE_LIMIT = 256 * 1024
#: Bytes read per worker-thread hop when streaming a value back.
READ_CHUNK = 1024 * 1024


class BlobStore:
    """The directory of large values belonging to the database at ``db_path``."""

    def __init__(self, db_path: str | Path) -> None:
        self.root = Path(f"{db_path}.blobs")

    def path(self, name: str) -> Path:
        """Where the value ``name`` is stored."""
        return self.root / name

    def write(self, data: bytes) -> str:
        """Store ``data`` durably under a new name and return the name (blocking: use a thread)."""
        self.root.mkdir(exist_ok=True)
        name = uuid.uuid4().hex
        partial = self.root / f"{name}.partial"
        with partial.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        partial.rename(self.root / name)
        return name

    def open(self, name: str) -> BinaryIO:
        """Open the value ``name`` for reading (an open file survives a concurrent delete)."""
        return self.path(name).open("rb")

    def read(self, name: str) -> bytes:
        """The whole value ``name`` (blocking)."""
        return self.path(name).read_bytes()

    def delete(self, name: str) -> None:
        """Remove the value ``name`` if it is still there (blocking)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
