"""The TOTP secret at rest: AES-256-GCM under a key derived (HKDF-SHA256) from the app's
secret key, with the old keys of a rotation still able to decrypt.

A stolen database (a dump, a backup, a read-only SQL injection) gives no second factor:
the secret is useless without the app's secret key, which is not in the database. The
user's id is the associated data, so a sealed secret copied onto another user's row does
not decrypt there. A fresh random 96-bit nonce per encryption (NIST SP 800-38D §8.2.2:
safe for far more secrets than a user table holds under one key).

Rotation: the first key seals; every key opens. The keys are the current secret key
followed by its fallbacks (Flask's ``SECRET_KEY_FALLBACKS``, or
``GUARDIAN_SECRET_KEY_FALLBACKS`` with ``GUARDIAN_SECRET_KEY``); a secret opened with a
fallback is sealed again under the current key on its next successful use
(:func:`~flask_guardian.two_factor.verify_second_factor`), so a fallback can be dropped
once every enrolled user has signed in with a code since the rotation.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

#: The stored form's version prefix: a later scheme can be told apart and migrated.
PREFIX = "v1."
_NONCE_BYTES = 12
#: HKDF ``info``: this key is for this purpose only (the same secret key also signs CSRF
#: tokens; a key derived for one use can never stand in for another).
_INFO = b"flask-guardian two-factor secret v1"


def derive_key(secret_key: bytes) -> bytes:
    """The 256-bit AES key for two-factor secrets derived from an app secret key."""
    # cryptography is imported when two-factor is used, not by every app at start-up.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key)


class SecretBox:
    """Seals and opens TOTP secrets with the keys derived from ``secret_keys`` (the current
    one first, then the fallbacks). Made at ``init_app``; its ciphers on first use, so an
    app that never uses two-factor pays nothing for them."""

    __slots__ = ("_built", "_keys")

    def __init__(self, secret_keys: tuple[bytes, ...]) -> None:
        if not secret_keys:
            raise ValueError("SecretBox needs at least one secret key")
        self._keys = secret_keys
        self._built: tuple[Any, ...] | None = None

    @property
    def _ciphers(self) -> tuple[Any, ...]:
        if self._built is None:  # two threads may both build them: the same ciphers
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._built = tuple(AESGCM(derive_key(key)) for key in self._keys)
        return self._built

    def seal(self, secret: str, user_id: int) -> str:
        """``secret`` encrypted under the current key, bound to ``user_id``, as ASCII."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[0].encrypt(nonce, secret.encode("ascii"), _aad(user_id))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, user_id: int) -> tuple[str, bool] | None:
        """``(secret, stale)``: the secret, and whether it was sealed under a fallback key
        (seal it again); None when no key opens it (a rotated-out key, a row tampered
        with or copied from another user)."""
        if not sealed.startswith(PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(PREFIX):].encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        from cryptography.exceptions import InvalidTag

        nonce, data = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for index, cipher in enumerate(self._ciphers):
            try:
                plain = cipher.decrypt(nonce, data, _aad(user_id))
            except (InvalidTag, ValueError):
                continue
            return plain.decode("ascii"), index > 0
        return None


def _aad(user_id: int) -> bytes:
    return f"guardian-2fa-user:{user_id}".encode("ascii")
