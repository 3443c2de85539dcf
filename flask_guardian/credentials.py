"""Passwords: hashed with libpass's ``CryptContext``, argon2id first; bcrypt, and
Werkzeug's ``generate_password_hash`` output (``scrypt:...``, ``pbkdf2:sha256:...``,
checked with Werkzeug's own ``check_password_hash``), accepted and re-hashed on the
next successful sign-in. (Failed sign-ins are counted in ``throttle.py``.)
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from typing import Any

import argon2
import bcrypt
import passlib
from passlib.context import CryptContext
from sqlalchemy import and_, not_, or_, select
from werkzeug.security import check_password_hash, generate_password_hash

from .config import Settings
from .errors import ConfigurationError

#: libpass releases start at 1.9; the original passlib stopped at 1.7.4.
LIBPASS_MIN_VERSION = (1, 9)


def check_passlib() -> None:
    """Refuse to start when the original ``passlib`` 1.7.4 has overwritten libpass's files.

    Both distributions install the ``passlib`` import package, so installing passlib after
    libpass (some other dependency may ask for it) silently replaces libpass's files. The
    old code cannot load bcrypt 4.1 or later: every bcrypt hash would then fail to verify,
    and every user with one would be refused at sign-in with no error anywhere. Reading
    the version of the files actually imported costs nothing, so it is checked at start-up.
    """
    version = str(getattr(passlib, "__version__", "0"))
    parts = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if parts < LIBPASS_MIN_VERSION:
        raise ConfigurationError(
            "passlib",
            f"the passlib files in this environment are version {version}, from the original "
            "passlib, which has overwritten libpass's (both install the 'passlib' package) "
            "and cannot verify bcrypt hashes with bcrypt 4.1 or later: run "
            "'pip install --force-reinstall libpass' (and remove whatever requires passlib)",
        )


def hash_kind(stored: str | None) -> str | None:
    """What a verification against ``stored`` costs, as a prefix of the hash: the scheme
    and its parameters (``$argon2id$v=19$m=19456,t=2,p=1$``, ``$2b$12$``), or None for a
    hash no accepted scheme reads."""
    if not stored:
        return None
    if stored.startswith("$argon2"):
        parts = stored.split("$")
        return "$".join(parts[:4]) + "$" if len(parts) >= 6 else None
    if _BCRYPT_PREFIX.match(stored):
        return stored[:7]
    werkzeug = _WERKZEUG_PREFIX.match(stored)
    return werkzeug.group(0) if werkzeug else None


_BCRYPT_PREFIX = re.compile(r"\$2[abxy]?\$\d\d\$")
#: Werkzeug's ``method$salt$hash``, its method with every parameter written out, as
#: ``generate_password_hash`` writes it: ``scrypt:N:r:p`` or ``pbkdf2:<digest>:<rounds>``.
_WERKZEUG_PREFIX = re.compile(
    r"(?:scrypt:\d{1,8}:\d{1,3}:\d{1,3}|pbkdf2:sha(?:1|224|256|384|512):\d{1,9})\$"
)


def is_werkzeug_kind(kind: str) -> bool:
    """True for a kind of hash written by Werkzeug's ``generate_password_hash``."""
    return not kind.startswith("$")
#: How long a process trusts its list of the kinds of hash in use before asking again.
KINDS_REFRESH_SECONDS = 600.0


class PasswordHasher:
    """Hashes and verifies passwords; counts every hash computation in
    ``hash_computations`` (tests assert it, so timing attacks are checked by count).

    Failed attempts cost alike whatever the account (OWASP Authentication cheat sheet:
    no account enumeration by timing). An unknown email verifies against a throw-away hash
    of the current parameters; a wrong password for an account verifies against its own
    hash. While some accounts still have a hash of another kind (bcrypt, argon2 with
    older parameters), which takes a different time to check, every failed attempt also
    verifies once against a throw-away hash of each kind in use that it did not check
    already: each failure then costs one verification of every kind, whichever account it
    named. The kinds in use are read from the users table (:meth:`kinds_in_use`)."""

    def __init__(self, settings: Settings) -> None:
        check_passlib()
        self.max_bytes = settings.password_max_length
        self.context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated=["bcrypt"],
            argon2__type="ID",
            argon2__memory_cost=settings.argon2_memory_cost,
            argon2__rounds=settings.argon2_time_cost,
            argon2__parallelism=settings.argon2_parallelism,
        )
        self.hash_computations = 0
        # Made at start-up, not on the first unknown email, so that first one costs what
        # every other does (one hash) and reveals nothing by its timing.
        self._dummy_hash = str(self.context.hash(secrets.token_urlsafe(16)))
        self.current_kind = hash_kind(self._dummy_hash) or ""
        self._dummies: dict[str, str] = {self.current_kind: self._dummy_hash}
        self._kinds: tuple[str, ...] = (self.current_kind,)
        self._kinds_read_at = -KINDS_REFRESH_SECONDS

    def too_long(self, password: str) -> bool:
        """True when ``password`` exceeds ``GUARDIAN_PASSWORD_MAX_LENGTH`` bytes: it is
        refused without hashing, so a megabyte password cannot burn a CPU."""
        return len(password) > self.max_bytes or len(password.encode("utf-8", "replace")) > (
            self.max_bytes
        )

    def hash(self, password: str) -> str:
        """A new argon2id hash of ``password``."""
        self.hash_computations += 1
        return str(self.context.hash(password))

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """``(matches, new_hash)``: ``new_hash`` is set when the stored hash uses an older
        scheme or weaker parameters and should be replaced. One hash computation (plus one
        for the upgrade itself); a stored hash the context cannot read, or a password
        bcrypt refuses (over 72 bytes), is a plain refusal. A refusal costs what every
        failure costs (see the class)."""
        kind = hash_kind(stored)
        if stored is None or kind is None:
            self.burn(password)
            return False, None
        self.hash_computations += 1
        if is_werkzeug_kind(kind):
            # Werkzeug's own check reads its own format; a match is re-hashed at once.
            if not _werkzeug_check(stored, password):
                self.burn(password, checked=kind)
                return False, None
            return True, self.hash(password)
        try:
            ok, new_hash = self.context.verify_and_update(password, stored)
        except ValueError:
            # bcrypt refuses passwords over 72 bytes: a refusal, never a 500.
            self.burn(password)
            return False, None
        if not ok:
            self.burn(password, checked=kind)
        elif new_hash is not None:
            self.hash_computations += 1
        return bool(ok), new_hash

    def burn(self, password: str, *, checked: str | None = None) -> None:
        """Verify against a throw-away hash of each kind in use but ``checked`` (the kind
        the attempt verified already): an unknown email or a refusal costs what a wrong
        password costs, so response time reveals neither which emails have accounts nor
        which scheme an account's hash uses."""
        for kind in self._kinds:
            if kind == checked:
                continue
            self.hash_computations += 1
            if is_werkzeug_kind(kind):
                _werkzeug_check(self._dummy(kind), password)
                continue
            with contextlib.suppress(ValueError):
                self.context.verify(_fit(kind, password), self._dummy(kind))

    def _dummy(self, kind: str) -> str:
        dummy = self._dummies.get(kind)
        if dummy is None:
            dummy = self._dummies[kind] = _make_dummy(kind)
        return dummy

    def kinds_in_use(self, db_session: Any, column: Any) -> tuple[str, ...]:
        """The kinds of hash ``column`` holds (the current one always first), read again
        when the last reading is older than :data:`KINDS_REFRESH_SECONDS`: one indexed-free
        query per kind, on the sign-in path only, at most every ten minutes."""
        now = time.monotonic()
        if now - self._kinds_read_at >= KINDS_REFRESH_SECONDS:
            self._kinds = read_hash_kinds(db_session, column, self.current_kind)
            for kind in self._kinds:
                self._dummy(kind)  # made now: a later attempt pays only the check
            self._kinds_read_at = now
        return self._kinds


def read_hash_kinds(db_session: Any, column: Any, current: str, limit: int = 32) -> tuple[
    str, ...
]:
    """Every kind of readable hash ``column`` holds, ``current`` first: one query per kind
    found (each asks for a hash of a kind not seen yet), at most ``limit`` kinds."""
    known = [current]
    unreadable: list[str] = []
    readable = or_(column.startswith("$argon2"), column.startswith("$2"),
                   column.startswith("scrypt:"), column.startswith("pbkdf2:"))
    for _ in range(limit):
        unseen = and_(readable, *[not_(column.startswith(k, autoescape=True)) for k in known],
                      *[column != value for value in unreadable])
        stored = db_session.execute(select(column).where(unseen).limit(1)).scalar()
        if stored is None:
            break
        kind = hash_kind(stored)
        if kind is None:
            # A prefix no scheme reads after all (verified as a failure): look past it.
            unreadable.append(stored)
            continue
        known.append(kind)
    return tuple(known)


def _werkzeug_check(stored: str, password: str) -> bool:
    """Werkzeug's own ``check_password_hash``; parameters hashlib refuses are a refusal."""
    try:
        return check_password_hash(stored, password)
    except ValueError:
        return False


def _fit(kind: str, password: str) -> str:
    """bcrypt refuses passwords over 72 bytes: its dummy check takes the first 72 (the
    cost is the same)."""
    if kind.startswith("$2"):
        return password.encode("utf-8", "replace")[:72].decode("utf-8", "ignore")
    return password


def _make_dummy(kind: str) -> str:
    """A throw-away hash of ``kind``'s scheme and parameters."""
    if is_werkzeug_kind(kind):
        return generate_password_hash(secrets.token_urlsafe(16), method=kind.rstrip("$"))
    secret = secrets.token_urlsafe(16).encode("ascii")
    if kind.startswith("$2"):
        rounds = int(kind[4:6])
        return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=rounds)).decode("ascii")
    variant, _version, params = kind.strip("$").split("$")
    values = dict(p.split("=", 1) for p in params.split(","))
    hasher = argon2.PasswordHasher(
        time_cost=int(values["t"]), memory_cost=int(values["m"]),
        parallelism=int(values["p"]),
        type={"argon2id": argon2.Type.ID, "argon2i": argon2.Type.I}.get(variant, argon2.Type.D),
    )
    return hasher.hash(secret)
