"""OAuth client credentials, as the platform's `/oauth/token` grants them.

POST /oauth/token with `Authorization: Basic base64(id:secret)` and `grant_type=client_credentials`
returns a bearer token living `ttl` seconds of *wall* time (tokens are an API matter, not part of
the simulated dialer's physics, so the time scale does not shorten them). The secret and the
tokens never appear in a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable

__all__ = ["TokenStore"]


class TokenStore:
    def __init__(self, client_id: str, client_secret: str, ttl: float, wall: Callable[[], float]) -> None:
        if not ttl > 0:
            raise ValueError(f"token lifetime must be > 0 seconds, got {ttl!r}")
        self.client_id = client_id
        self._secret = client_secret
        self.ttl = ttl
        self._wall = wall
        self._tokens: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"TokenStore(client_id={self.client_id!r}, ttl={self.ttl}, tokens={len(self._tokens)})"

    def credentials_match(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, secret = decoded.partition(":")
        return bool(sep) and hmac.compare_digest(client_id.encode(), self.client_id.encode()) and \
            hmac.compare_digest(secret.encode(), self._secret.encode())

    def mint(self) -> str:
        """A fresh token (what the token endpoint hands out; tests may call it directly)."""
        now = self._wall()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + self.ttl
        return token

    def valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        expires = self._tokens.get(authorization[7:].strip())
        return expires is not None and expires > self._wall()

    def revoke_all(self) -> int:
        count = len(self._tokens)
        self._tokens.clear()
        return count
