"""Which environment variables hold the control plane's secrets, which no worker needs.

One rule for everything that hands an environment on: ``supervise`` re-executes itself
without them before it forks the task (``supervisor.cli``, ``supervisor.spawn``), and
``taskvisor_airflow.TaskvisorExecutor`` starts each ``supervise`` without them.
"""

from __future__ import annotations

__all__ = ["CONTROL_PLANE_SECRET_WORDS", "is_control_plane_secret"]

#: Words in the names of the control plane's secrets: ``*JWT*`` (the api-server's signing
#: secret, ``[api_auth] jwt_secret``, and its ``_CMD``/``_SECRET`` forms),
#: ``*SQL_ALCHEMY_CONN*`` (the metadata database, ``[database] sql_alchemy_conn``),
#: ``*FERNET_KEY*`` (``[core] fernet_key``, which decrypts what the database holds) and
#: ``*__SECRET_KEY`` (``[api] secret_key``).
CONTROL_PLANE_SECRET_WORDS = ("JWT", "SQL_ALCHEMY_CONN", "FERNET_KEY", "__SECRET_KEY")


def is_control_plane_secret(name: str) -> bool:
    """Whether environment variable ``name`` holds one of the control plane's secrets."""
    upper = name.upper()
    return any(word in upper for word in CONTROL_PLANE_SECRET_WORDS)
