"""Login tokens and the admin token.

A user token is ``user_id.expiry.signature``: the expiry in epoch seconds and an HMAC-SHA256 of
``user_id.expiry`` under the data directory's secret (base64url, no padding). The server keeps no
session table — any token it signed is valid until it expires, across restarts, because the secret
lives in the data directory. User ids cannot contain ``.`` (see Exchange.open_account), so the token
splits unambiguously.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


class TokenError(Exception):
    """The token is malformed, forged or expired; the message is safe to show the caller."""


class TokenSigner:
    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret = secret
        self.ttl = ttl

    def _signature(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, user_id: str, *, now: float | None = None) -> tuple[str, int]:
        """A token for `user_id` and its expiry (epoch seconds)."""
        expiry = int(time.time() if now is None else now) + self.ttl
        payload = f"{user_id}.{expiry}"
        return f"{payload}.{self._signature(payload)}", expiry

    def verify(self, token: str, *, now: float | None = None) -> str:
        """The user id the token was issued to; raises TokenError."""
        user_id, _, rest = token.partition(".")
        expiry_text, _, signature = rest.partition(".")
        if not (user_id and expiry_text.isdigit() and signature):
            raise TokenError("malformed token")
        if not hmac.compare_digest(signature, self._signature(f"{user_id}.{expiry_text}")):
            raise TokenError("invalid token")
        if int(expiry_text) <= (time.time() if now is None else now):
            raise TokenError("token expired: log in again")
        return user_id


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_admin_token(candidate: str, admin_token: str) -> bool:
    return hmac.compare_digest(candidate.encode(), admin_token.encode())
