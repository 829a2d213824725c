"""The demo bearer tokens: a user id signed with the server's secret.

A token is ``<user_id>.<hex HMAC-SHA256 of the user id>``. Anyone may log in
as any user: the scheme only shows where a real application plugs its own
authentication, and guarantees that a request acts as one user, fixed by the
token, never by a field of the request.
"""

from __future__ import annotations

import hashlib
import hmac

from ..model import validate_id

__all__ = ["Unauthorized", "TokenSigner"]


class Unauthorized(Exception):
    """A request has no token, or a token this server did not sign."""

    code = "unauthorized"


class TokenSigner:
    """Makes and checks the demo tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the token secret must not be empty")
        self._key = secret.encode("utf-8")

    def token(self, user_id: str) -> str:
        """Returns the token of ``user_id`` (a valid id, or `InvalidId`)."""
        user_id = validate_id(user_id, "user_id")
        return f"{user_id}.{self._sign(user_id)}"

    def user_of(self, token: str | None) -> str:
        """Returns the user a token was made for, or raises `Unauthorized`."""
        if not token:
            raise Unauthorized("a bearer token is required (POST /api/login)")
        user_id, _, signature = token.rpartition(".")
        if not user_id or not hmac.compare_digest(
            signature.encode("ascii", "replace"), self._sign(user_id).encode("ascii")
        ):
            raise Unauthorized("the token is not valid on this server")
        return user_id

    def _sign(self, user_id: str) -> str:
        return hmac.new(
            self._key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
