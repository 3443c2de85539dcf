"""Second-factor codes as values: reading what a client typed, TOTP (RFC 6238: HMAC-SHA1,
6 digits, 30-second steps, as every authenticator app expects) and recovery codes.
No storage here: ``two_factor.py`` decides what is accepted."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    import pyotp

TOTP_DIGITS = 6
TOTP_PERIOD = 30
#: Steps of clock drift accepted either side of the server's (RFC 6238 §5.2 recommends one).
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
#: Crockford's base32 alphabet (no i, l, o, u: nothing to misread when typed from paper).
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
#: 16 characters of 5 bits: 80 random bits per code.
RECOVERY_CODE_LENGTH = 16
#: Anything longer is refused before it is looked at (a code is 6 or 19 characters).
CODE_MAX_LENGTH = 64
#: What a typed code may be split with: spaces and dashes, as apps and printouts show them.
_SEPARATORS = str.maketrans("", "", " -")
#: Crockford's decoding of the letters a recovery code never contains but a reader may
#: see in it: i and l are 1, o is 0.
_MISREAD = str.maketrans("ilo", "110")


class Code(NamedTuple):
    """A code in canonical form: ``kind`` says which check applies."""

    kind: Literal["totp", "recovery"]
    value: str


def read_code(code: object) -> Code | None:
    """The canonical form of a code a client sent, or None when it cannot be one: not a
    string, too long, or anything but 6 ASCII digits or a 16-character recovery code once
    spaces and dashes are taken out (letters in a TOTP code, 7 digits, NUL, non-ASCII
    digits: all None). A recovery code is read in any case, i and l as 1, o as 0."""
    if not isinstance(code, str) or len(code) > CODE_MAX_LENGTH or not code.isascii():
        return None
    compact = code.translate(_SEPARATORS)
    if len(compact) == TOTP_DIGITS and compact.isdigit():
        return Code("totp", compact)
    lowered = compact.lower().translate(_MISREAD)
    if len(lowered) == RECOVERY_CODE_LENGTH and all(c in RECOVERY_ALPHABET for c in lowered):
        return Code("recovery", lowered)
    return None


def new_secret() -> str:
    """A new TOTP secret: 160 random bits (RFC 4226 §4 recommends 160) in base32."""
    import pyotp  # imported when two-factor is used, not by every app at start-up

    return pyotp.random_base32(32)


def totp(secret: str) -> pyotp.TOTP:
    """The RFC 6238 generator for ``secret``."""
    import pyotp

    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)


def current_step(now: datetime) -> int:
    """The TOTP time step of ``now`` (Unix time // 30)."""
    return int(now.timestamp()) // TOTP_PERIOD


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The latest step within the drift window whose code is ``code``, or None. Every
    candidate is compared in constant time."""
    generator = totp(secret)
    step = current_step(now)
    found = None
    for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
        if hmac.compare_digest(generator.generate_otp(candidate), code):
            found = candidate
    return found


def otpauth_url(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URL an authenticator app reads from the QR code."""
    return totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def new_recovery_codes() -> list[str]:
    """:data:`RECOVERY_CODE_COUNT` new recovery codes, shown as ``xxxx-xxxx-xxxx-xxxx``."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append("-".join(raw[i:i + 4] for i in range(0, RECOVERY_CODE_LENGTH, 4)))
    return codes


def recovery_digest(user_id: int, canonical: str) -> str:
    """What is stored for a recovery code: SHA-256 of the user id and the code.

    Why not argon2, as for passwords: a slow hash protects guessable secrets from an
    offline search. A recovery code is 80 random bits; searching 2**80 SHA-256 digests is
    out of reach for anyone, so a slow hash would add cost to every check and nothing to
    the defence. The user id in the digest makes equal codes of two users differ."""
    return hashlib.sha256(f"{user_id}:{canonical}".encode("ascii")).hexdigest()
