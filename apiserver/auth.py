"""Task tokens, as Apache Airflow 3 issues and checks them.

A token is an HS512 JWT signed with the server's shared secret. Claims: ``aud`` =
:data:`comms.api.TOKEN_AUDIENCE`, ``sub`` = the task instance UUID, ``iat``/``nbf``/``exp``,
``jti``, and ``scope``: ``workload`` (what an executor ships; accepted only by
``PATCH /task-instances/{id}/run``) or ``execution`` (everything else; the default when the
claim is missing).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import jwt
import msgspec

from comms.api import TOKEN_AUDIENCE

__all__ = [
    "ALGORITHM",
    "MIN_SECRET_BYTES",
    "InvalidToken",
    "Scope",
    "TokenClaims",
    "check_secret",
    "check_time_claims",
    "decode_token",
    "mint_token",
    "reissue_token",
]

#: The only algorithm accepted: Airflow's choice for a shared secret.
ALGORITHM = "HS512"

#: HS512 wants a key at least as long as its output; PyJWT warns on every call otherwise.
MIN_SECRET_BYTES = 64

Scope = Literal["execution", "workload"]

_REQUIRED_CLAIMS = ["aud", "exp", "iat", "nbf", "sub"]


class InvalidToken(Exception):
    """The bearer token was rejected; ``str()`` says why (sent as ``Invalid auth token: ...``)."""


class TokenClaims(msgspec.Struct, kw_only=True):
    """The claims of a verified task token."""

    sub: uuid.UUID
    exp: int
    iat: int
    nbf: int
    aud: str | list[str]
    scope: Scope = "execution"
    jti: str | None = None

    @property
    def ti_id(self) -> str:
        """The task instance id the token belongs to, in canonical form."""
        return str(self.sub)


def check_secret(secret: str) -> None:
    """Raise ``ValueError`` if ``secret`` is too short to sign HS512 tokens safely."""
    length = len(secret.encode())
    if length < MIN_SECRET_BYTES:
        raise ValueError(
            f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes for {ALGORITHM}, "
            f"got {length}"
        )


def mint_token(
    secret: str, ti_id: str | uuid.UUID, *, scope: Scope = "execution", lifetime: float = 600
) -> str:
    """Sign a task token for ``ti_id``, valid for ``lifetime`` seconds from now.

    A negative ``lifetime`` gives an already expired token (for tests).
    """
    now = int(time.time())
    claims: dict[str, Any] = {
        "jti": uuid.uuid4().hex,
        "aud": TOKEN_AUDIENCE,
        "sub": str(ti_id),
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "scope": scope,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def reissue_token(secret: str, claims: TokenClaims, *, lifetime: float) -> str:
    """A fresh token with the same subject and scope as ``claims`` and a new expiry."""
    return mint_token(secret, claims.sub, scope=claims.scope, lifetime=lifetime)


def check_time_claims(claims: TokenClaims, now: float, *, leeway: float) -> None:
    """Raise :class:`InvalidToken` unless ``claims`` are valid at ``now`` (within ``leeway``)."""
    if claims.exp + leeway < now:
        raise InvalidToken("Signature has expired")
    if claims.nbf - leeway > now:
        raise InvalidToken("The token is not yet valid (nbf)")
    if claims.iat - leeway > now:
        raise InvalidToken("The token is not yet valid (iat)")


def decode_token(
    token: str, secret: str, *, leeway: float = 10, now: float | None = None
) -> TokenClaims:
    """Verify ``token`` and return its claims, or raise :class:`InvalidToken`.

    Rejects anything but HS512 (``none``, HS256, RS*), a bad signature, a wrong audience, a
    missing required claim, an unknown scope, and a token expired or not valid yet at ``now``
    (default: the current time) beyond ``leeway`` seconds.
    """
    try:
        raw = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=TOKEN_AUDIENCE,
            # Time claims are checked below against ``now``, the same clock the server's
            # cache of verified tokens uses.
            options={
                "require": _REQUIRED_CLAIMS,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
        claims = msgspec.convert(raw, TokenClaims)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    except msgspec.ValidationError as exc:
        raise InvalidToken(f"bad claims: {exc}") from exc
    check_time_claims(claims, time.time() if now is None else now, leeway=leeway)
    return claims
