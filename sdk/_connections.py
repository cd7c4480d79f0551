"""``Connection``: connection details (host, credentials, extras) served by the supervisor."""

from __future__ import annotations

from typing import Any

import msgspec

from comms.messages import ConnectionResult, GetConnection
from sdk import _session

__all__ = ["Connection"]


class Connection(msgspec.Struct, frozen=True, kw_only=True):
    """A connection, as Airflow defines it. Get one with :meth:`Connection.get`.

    ``extra`` is a JSON string (as in Airflow); :attr:`extra_dejson` is it decoded. The
    password and extra never appear in ``repr``.
    """

    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: str | None = None

    @classmethod
    def get(cls, conn_id: str) -> Connection:
        """Return connection ``conn_id``; raises :class:`~sdk.errors.ConnectionNotFound`."""
        result = _session.call(
            "Connection.get()", GetConnection(id=0, conn_id=conn_id), ConnectionResult
        )
        return cls(
            conn_id=result.conn_id,
            conn_type=result.conn_type,
            host=result.host,
            port=result.port,
            login=result.login,
            password=result.password,
            schema=result.schema,
            extra=result.extra,
        )

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """``extra`` decoded from JSON; ``{}`` when there is none.

        Raises ``ValueError`` naming the connection if ``extra`` is not a JSON object.
        """
        if not self.extra:
            return {}
        try:
            value = msgspec.json.decode(self.extra)
        except msgspec.DecodeError as exc:
            raise ValueError(f"extra of connection {self.conn_id!r} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(  # noqa: TRY004 - bad stored data, not a bad argument
                f"extra of connection {self.conn_id!r} is not a JSON object "
                f"but a {type(value).__name__}"
            )
        return value

    def __repr__(self) -> str:
        shown = ("conn_id", "conn_type", "host", "port", "login", "schema")
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in shown if getattr(self, name) is not None
        )
        return f"Connection({fields})"
