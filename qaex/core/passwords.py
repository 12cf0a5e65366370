"""Password hashing: salted scrypt from the standard library.

Stored form: ``scrypt$n$r$p$salt_hex$hash_hex``. Verification is constant-time. Hashing costs a few
milliseconds on purpose; the servers run it in a worker thread so the event loop never stalls.
"""

from __future__ import annotations

import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1
DKLEN = 32


def hash_password(password: str, *, n: int = N) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=R, p=P, dklen=DKLEN)
    return f"scrypt${n}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=DKLEN
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, bytes.fromhex(digest_hex))
