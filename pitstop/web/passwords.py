"""Password hashes for the users of ``config/web.yaml``: scrypt (made by ``pitstop web
hash-password``) or PBKDF2-SHA256, checked in constant time.

Formats (base64 without padding): ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` and
``pbkdf2_sha256$<iterations>$<salt>$<hash>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from pitstop.kernel.errors import ValidationError

__all__ = ["check_hash_format", "hash_password", "verify_password"]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_KEY_BYTES = 32
_MIN_PBKDF2_ITERATIONS = 100_000
_MAX_SCRYPT_N = 2**20
_MAX_PASSWORD_CHARS = 1024
# Verified when the user is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY = ""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A scrypt hash of ``password`` for ``config/web.yaml``."""
    if not password:
        raise ValidationError("the password is empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=_KEY_BYTES, maxmem=64 * 1024 * 1024)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_hash_format(stored: str) -> str | None:
    """Why ``stored`` is not a hash this module can verify; None when it is one."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if n < 2**10 or n > _MAX_SCRYPT_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
                return "scrypt parameters out of range (n a power of two 1024..1048576, r 1..32, p 1..16)"
            _unb64(parts[4])
            _unb64(parts[5])
            return None
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if int(parts[1]) < _MIN_PBKDF2_ITERATIONS:
                return f"pbkdf2_sha256 needs at least {_MIN_PBKDF2_ITERATIONS} iterations"
            _unb64(parts[2])
            _unb64(parts[3])
            return None
    except (ValueError, binascii.Error):
        return "malformed number or base64 in the hash"
    return ("not a password hash: expected scrypt$n$r$p$salt$hash or "
            "pbkdf2_sha256$iterations$salt$hash (make one with `pitstop web hash-password`)")


def _derive(password: str, stored: str) -> tuple[bytes, bytes] | None:
    parts = stored.split("$")
    if check_hash_format(stored) is not None:
        return None
    if parts[0] == "scrypt":
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                             maxmem=128 * r * n * 2 + 1024 * 1024)
        return got, expected
    iterations = int(parts[1])
    salt, expected = _unb64(parts[2]), _unb64(parts[3])
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, dklen=len(expected))
    return got, expected


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (None: an unknown user, always False after the
    same work as a real check)."""
    global _DUMMY
    if len(password) > _MAX_PASSWORD_CHARS:
        return False
    if stored is None:
        if not _DUMMY:
            _DUMMY = hash_password(secrets.token_urlsafe(16))
        _derive(password, _DUMMY)
        return False
    derived = _derive(password, stored)
    if derived is None:
        return False
    return hmac.compare_digest(*derived)
