"""Passwords and brute-force counters.

Passwords are hashed with libpass's ``CryptContext``: argon2id first, bcrypt accepted and
re-hashed on the next successful sign-in. Failed sign-ins are counted per normalised email
and per client IP in ``guardian_login_attempts``, so every process shares the count.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import argon2
import bcrypt
import passlib
from passlib.context import CryptContext
from sqlalchemy import and_, case, delete, literal, not_, or_, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .config import Settings
from .errors import ConfigurationError
from .models import Models, utcnow
from .storage import is_storage_error, rollback_quietly

#: At most this many give-backs are kept owed in a process while the database is away.
OWED_MAX = 10_000

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
    return None


_BCRYPT_PREFIX = re.compile(r"\$2[abxy]?\$\d\d\$")
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
    readable = or_(column.startswith("$argon2"), column.startswith("$2"))
    for _ in range(limit):
        unseen = and_(readable, *[not_(column.startswith(k, autoescape=True)) for k in known])
        stored = db_session.execute(select(column).where(unseen).limit(1)).scalar()
        kind = hash_kind(stored)
        if kind is None:
            break  # nothing unseen, or only hashes no scheme reads (counted as failures)
        known.append(kind)
    return tuple(known)


def _fit(kind: str, password: str) -> str:
    """bcrypt refuses passwords over 72 bytes: its dummy check takes the first 72 (the
    cost is the same)."""
    if kind.startswith("$2"):
        return password.encode("utf-8", "replace")[:72].decode("utf-8", "ignore")
    return password


def _make_dummy(kind: str) -> str:
    """A throw-away hash of ``kind``'s scheme and parameters."""
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


class Attempts(NamedTuple):
    """The attempts counted for one key in its current window, and when it ends."""

    failures: int
    window_ends: datetime


class LoginThrottle:
    """Counts sign-in attempts per key in the database, in a fixed window of
    ``GUARDIAN_LOCKOUT_DURATION`` seconds.

    An attempt is counted *before* its password is checked and the count committed at
    once, so attempts fired in parallel cannot all pass the check before any of them is
    counted; a successful sign-in then takes its attempt back.
    """

    def __init__(self, settings: Settings, models: Models) -> None:
        self.window = timedelta(seconds=settings.lockout_duration)
        self.table = models.login_attempt.__table__
        #: Attempts to give back that an outage kept from being given back (bounded).
        self._owed: list[str] = []
        self._owed_lock = threading.Lock()

    def give_back(self, db: Any, keys: list[str], *, now: bool = True) -> None:
        """Take back one attempt for each of ``keys``: a sign-in that ended in a storage
        error is not a failure of the user's, and must not lock them out. When the
        database cannot take it back now, it is owed and settled by :meth:`settle` on a
        later sign-in, so a fault never inflates a count for long. ``now=False`` owes them
        without trying (the database just timed out)."""
        with self._owed_lock:
            if not now:
                self._owed = (self._owed + keys)[-OWED_MAX:]
                return
            owed, self._owed = self._owed + keys, []
        try:
            for key in owed:
                self.release(db.session, key)
            db.session.commit()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            rollback_quietly(db)
            with self._owed_lock:
                self._owed = (owed + self._owed)[-OWED_MAX:]

    def settle(self, db: Any) -> None:
        """Give back what earlier outages left owed (nothing to do, and no query, in the
        ordinary case)."""
        if self._owed:
            self.give_back(db, [])

    def hit(self, db_session: Any, key: str) -> Attempts:
        """Count one attempt for ``key`` and return the attempts in the current window,
        this one included, and when that window ends. The increment is done in SQL (and
        the row stays locked until the caller commits), so concurrent processes neither
        lose nor share counts."""
        now = utcnow()
        upsert = self._upsert(db_session, key, now)
        if upsert is not None:
            db_session.execute(upsert)
            return self._count(db_session, key)
        table = self.table
        for _ in range(3):
            restarted = db_session.execute(
                update(table)
                .where(table.c.key == key, table.c.window_started_at <= now - self.window)
                .values(failures=1, window_started_at=now)
            ).rowcount
            counted = restarted or db_session.execute(
                update(table).where(table.c.key == key).values(failures=table.c.failures + 1)
            ).rowcount
            if counted:
                return self._count(db_session, key)
            try:
                with db_session.begin_nested():
                    db_session.execute(
                        table.insert().values(key=key, failures=1, window_started_at=now)
                    )
                return Attempts(1, now + self.window)
            except IntegrityError:
                continue  # another process inserted it first: count on its row
        raise RuntimeError(f"could not count a sign-in attempt for {key!r}")

    def _count(self, db_session: Any, key: str) -> Attempts:
        table = self.table
        failures, started = db_session.execute(
            select(table.c.failures, table.c.window_started_at).where(table.c.key == key)
        ).one()
        return Attempts(int(failures), started + self.window)

    def _upsert(self, db_session: Any, key: str, now: datetime) -> Any:
        """One atomic INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE that counts an
        attempt (restarting an ended window), or None for a dialect without one. Separate
        UPDATE, then INSERT on a miss, deadlock on MariaDB when several first attempts for
        one key race: each failed INSERT keeps a shared lock on the new row and then waits
        for the others' to UPDATE it (error 1213, a 500)."""
        table = self.table
        expired = table.c.window_started_at <= now - self.window
        failures = case((expired, 1), else_=table.c.failures + 1)
        started = case(
            (expired, literal(now, table.c.window_started_at.type)),
            else_=table.c.window_started_at,
        )
        values = {"key": key, "failures": 1, "window_started_at": now}
        dialect = db_session.get_bind().dialect.name
        if dialect in ("mysql", "mariadb"):
            # MySQL applies the assignments in order, each seeing the ones before it:
            # failures first, while window_started_at still holds the old value.
            return mysql_insert(table).values(values).on_duplicate_key_update(
                [("failures", failures), ("window_started_at", started)]
            )
        if dialect == "postgresql":
            insert: Any = postgresql_insert
        elif dialect == "sqlite":
            insert = sqlite_insert
        else:
            return None
        return insert(table).values(values).on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"failures": failures, "window_started_at": started},
        )

    def reset(self, db_session: Any, key: str) -> None:
        """Forget the attempts of ``key`` (a successful sign-in for an email)."""
        db_session.execute(delete(self.table).where(self.table.c.key == key))

    def release(self, db_session: Any, key: str) -> None:
        """Take back one attempt of ``key`` (a successful sign-in from an address, which
        must not reset what other accounts tried from there)."""
        table = self.table
        db_session.execute(
            update(table)
            .where(table.c.key == key, table.c.failures > 0)
            .values(failures=table.c.failures - 1)
        )
        db_session.execute(delete(table).where(table.c.key == key, table.c.failures <= 0))
