"""Passwords and brute-force counters.

Passwords are hashed with libpass's ``CryptContext``: argon2id first, bcrypt accepted and
re-hashed on the next successful sign-in. Failed sign-ins are counted per normalised email
and per client IP in ``guardian_login_attempts``, so every process shares the count.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

from passlib.context import CryptContext
from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .config import Settings
from .models import Models, utcnow
from .storage import is_storage_error, rollback_quietly

#: At most this many give-backs are kept owed in a process while the database is away.
OWED_MAX = 10_000


class PasswordHasher:
    """Hashes and verifies passwords; counts every hash computation in
    ``hash_computations`` (tests assert it, so timing attacks are checked by count)."""

    def __init__(self, settings: Settings) -> None:
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
        bcrypt refuses (over 72 bytes), is a plain refusal."""
        if not stored:
            self.burn(password)
            return False, None
        self.hash_computations += 1
        try:
            ok, new_hash = self.context.verify_and_update(password, stored)
        except ValueError:
            # bcrypt refuses passwords over 72 bytes; an unreadable stored hash is a
            # refusal too, never a 500.
            return False, None
        if new_hash is not None:
            self.hash_computations += 1
        return bool(ok), new_hash

    def burn(self, password: str) -> None:
        """Verify against a throw-away hash: an unknown email costs what a wrong password
        costs, so response time does not reveal which emails have accounts."""
        self.hash_computations += 1
        self.context.verify(password, self._dummy_hash)


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

    def hit(self, db_session: Any, key: str) -> int:
        """Count one attempt for ``key`` and return the attempts in the current window,
        this one included. The increment is done in SQL (and the row stays locked until
        the caller commits), so concurrent processes neither lose nor share counts."""
        now = utcnow()
        table = self.table
        upsert = self._upsert(db_session, key, now)
        if upsert is not None:
            db_session.execute(upsert)
            return int(
                db_session.execute(select(table.c.failures).where(table.c.key == key)).scalar_one()
            )
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
                return int(
                    db_session.execute(
                        select(table.c.failures).where(table.c.key == key)
                    ).scalar_one()
                )
            try:
                with db_session.begin_nested():
                    db_session.execute(
                        table.insert().values(key=key, failures=1, window_started_at=now)
                    )
                return 1
            except IntegrityError:
                continue  # another process inserted it first: count on its row
        raise RuntimeError(f"could not count a sign-in attempt for {key!r}")

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
