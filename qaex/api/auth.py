"""Login tokens and the admin token.

A user token is ``user_id.expiry.signature``: the expiry in epoch seconds and an HMAC-SHA256 of
``user_id.expiry`` under the data directory's secret (base64url, no padding). The server keeps no
session table — any token it signed is valid until it expires, across restarts, because the secret
lives in the data directory. User ids cannot contain ``.`` (``limits.USER_ID_PATTERN``), so the token
splits unambiguously. Verification checks the shape of each part first: any string a client sends
is a TokenError (401), never another exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from qaex.core.limits import is_user_id

_EXPIRY = re.compile(r"[0-9]{1,12}")  # epoch seconds, ASCII digits only (int() takes any script's)
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest, no padding


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
        """The user id the token was issued to; raises TokenError (and nothing else) for any string."""
        user_id, _, rest = token.partition(".")
        expiry_text, _, signature = rest.partition(".")
        if not (is_user_id(user_id) and _EXPIRY.fullmatch(expiry_text) and _SIGNATURE.fullmatch(signature)):
            raise TokenError("malformed token")
        # Both ASCII by now; compared as bytes all the same (compare_digest refuses non-ASCII str).
        expected = self._signature(f"{user_id}.{expiry_text}")
        if not hmac.compare_digest(signature.encode(), expected.encode()):
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
    """Constant-time comparison, as bytes: any string (non-ASCII, lone surrogates) is just unequal."""
    return hmac.compare_digest(
        candidate.encode("utf-8", "surrogatepass"), admin_token.encode("utf-8", "surrogatepass")
    )
