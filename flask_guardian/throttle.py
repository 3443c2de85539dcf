"""Brute-force counters: failed sign-ins counted per normalised email (a digest) and per
client address, in a fixed window of ``GUARDIAN_LOCKOUT_DURATION`` seconds, shared by
every process.

Two backends with the same rules and the same answers: rows of
``guardian_login_attempts`` in the application's database (:class:`SQLThrottle`), or
Redis hashes when ``GUARDIAN_REDIS_URL`` is set (:class:`RedisThrottle`). The window is
decided in Python in both, so the clock the sessions use decides the lock too.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .models import utcnow
from .storage import is_storage_error, rollback_quietly

if TYPE_CHECKING:
    from .config import Settings
    from .models import Models
    from .redis_client import RedisConnection

#: At most this many give-backs are kept owed in a process while the store is away.
OWED_MAX = 10_000


class Attempts(NamedTuple):
    """The attempts counted for one key in its current window, and when it ends."""

    failures: int
    window_ends: datetime


class LoginThrottle(ABC):
    """Counts sign-in attempts per key in a fixed window of ``GUARDIAN_LOCKOUT_DURATION``
    seconds.

    An attempt is counted *before* its password is checked (and the count made durable
    at once), so attempts fired in parallel cannot all pass the check before any of them
    is counted; a successful sign-in then takes its attempt back.
    """

    def __init__(self, settings: Settings) -> None:
        self.window = timedelta(seconds=settings.lockout_duration)
        #: Attempts to give back that an outage kept from being given back (bounded).
        self._owed: list[str] = []
        self._owed_lock = threading.Lock()

    @abstractmethod
    def hit(self, db_session: Any, key: str) -> Attempts:
        """Count one attempt for ``key`` and return the attempts in the current window,
        this one included, and when that window ends. Concurrent processes neither lose
        nor share counts."""

    @abstractmethod
    def reset(self, db_session: Any, key: str) -> None:
        """Forget the attempts of ``key`` (a successful sign-in for an email)."""

    @abstractmethod
    def release(self, db_session: Any, key: str) -> None:
        """Take back one attempt of ``key`` (a successful sign-in from an address, which
        must not reset what other accounts tried from there)."""

    @abstractmethod
    def _release_all(self, db: Any, keys: list[str]) -> None:
        """Take back one attempt of each of ``keys`` now, durably."""

    def give_back(self, db: Any, keys: list[str], *, now: bool = True) -> None:
        """Take back one attempt for each of ``keys``: a sign-in that ended in a storage
        error is not a failure of the user's, and must not lock them out. When the store
        cannot take it back now, it is owed and settled by :meth:`settle` on a later
        sign-in, so a fault never inflates a count for long. ``now=False`` owes them
        without trying (the store just timed out)."""
        with self._owed_lock:
            if not now:
                self._owed = (self._owed + keys)[-OWED_MAX:]
                return
            owed, self._owed = self._owed + keys, []
        try:
            self._release_all(db, owed)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            with self._owed_lock:
                self._owed = (owed + self._owed)[-OWED_MAX:]

    def settle(self, db: Any) -> None:
        """Give back what earlier outages left owed (nothing to do, and no query, in the
        ordinary case)."""
        if self._owed:
            self.give_back(db, [])


def make_throttle(settings: Settings, models: Models,
                  redis: RedisConnection | None) -> LoginThrottle:
    """The counters in Redis when the app has a Redis client, else in SQL rows."""
    if redis is not None:
        return RedisThrottle(settings, redis)
    return SQLThrottle(settings, models)


class SQLThrottle(LoginThrottle):
    """Counters as rows of ``guardian_login_attempts``, in the application's transaction
    (the caller commits)."""

    def __init__(self, settings: Settings, models: Models) -> None:
        super().__init__(settings)
        self.table = models.login_attempt.__table__

    def _release_all(self, db: Any, keys: list[str]) -> None:
        try:
            for key in keys:
                self.release(db.session, key)
            db.session.commit()
        except Exception:
            rollback_quietly(db)
            raise

    def hit(self, db_session: Any, key: str) -> Attempts:
        """The increment is done in SQL (and the row stays locked until the caller
        commits), so concurrent processes neither lose nor share counts."""
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
        db_session.execute(delete(self.table).where(self.table.c.key == key))

    def release(self, db_session: Any, key: str) -> None:
        table = self.table
        db_session.execute(
            update(table)
            .where(table.c.key == key, table.c.failures > 0)
            .values(failures=table.c.failures - 1)
        )
        db_session.execute(delete(table).where(table.c.key == key, table.c.failures <= 0))


#: Count one attempt on the hash KEYS[1] (fields n: failures, t: window start in epoch
#: seconds) at ARGV[1] = now, with ARGV[2] = the window in seconds: the window restarts
#: when it has ended, as the SQL upsert does. One script, so the read, the increment and
#: the expiry are one atomic step for every process. The expiry only tidies Redis (the
#: window itself is decided from the stored start, in Python's clock).
_HIT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = redis.call('HGET', KEYS[1], 't')
local start = tonumber(stored)
local n
if start == nil or start <= now - window then
  redis.call('HSET', KEYS[1], 'n', 1, 't', ARGV[1])
  start, stored, n = now, ARGV[1], 1
else
  n = redis.call('HINCRBY', KEYS[1], 'n', 1)
end
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((start + window - now) * 1000)))
return {n, stored}
"""

#: Take back one attempt of KEYS[1]; the key goes when nothing is left (as the SQL row).
_RELEASE = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
if n == nil then return 0 end
if n <= 1 then redis.call('DEL', KEYS[1]) return 0 end
return redis.call('HINCRBY', KEYS[1], 'n', -1)
"""


class RedisThrottle(LoginThrottle):
    """Counters as Redis hashes under ``GUARDIAN_REDIS_PREFIX`` + ``lock:`` + the key
    (already a digest or a network, never an email), counted by one Lua script each.

    Each command is done at once (there is no transaction to wait for). A Redis that
    cannot answer is reported as a :class:`ConnectionError`, the outage every sign-in
    path already turns into a 503 with the attempt given back, never a 500 and never an
    attempt let through uncounted."""

    def __init__(self, settings: Settings, redis: RedisConnection) -> None:
        super().__init__(settings)
        self._client = redis.client
        self._errors = redis.errors
        self._prefix = settings.redis_prefix + "lock:"
        self._seconds = self.window.total_seconds()
        self._hit = redis.client.register_script(_HIT)
        self._release = redis.client.register_script(_RELEASE)
        # The keys counted since this thread's last settle() (one sign-in: settle, then a
        # hit per key). In SQL they share one transaction, which a failure rolls back;
        # here each hit is done at once, so a failing later hit owes the earlier back.
        self._counted = threading.local()

    def settle(self, db: Any) -> None:
        self._counted.keys = []
        super().settle(db)

    def _down(self, exc: BaseException) -> ConnectionError:
        # Text kept: "timed out" in it tells the sign-in not to wait on a give-back.
        return ConnectionError(f"redis: {type(exc).__name__}: {exc}")

    def hit(self, db_session: Any, key: str) -> Attempts:
        now = utcnow().timestamp()
        counted: list[str] = getattr(self._counted, "keys", [])
        try:
            failures, start = self._hit(keys=[self._prefix + key],
                                        args=[repr(now), repr(self._seconds)])
        except self._errors as exc:
            self._counted.keys = []
            self.give_back(None, counted, now=False)  # settled once Redis answers again
            raise self._down(exc) from exc
        self._counted.keys = [*counted, key][-4:]  # bounded, should no settle() come
        return Attempts(int(failures), datetime.fromtimestamp(float(start), UTC) + self.window)

    def reset(self, db_session: Any, key: str) -> None:
        try:
            self._client.delete(self._prefix + key)
        except self._errors as exc:
            raise self._down(exc) from exc

    def release(self, db_session: Any, key: str) -> None:
        try:
            self._release(keys=[self._prefix + key])
        except self._errors as exc:
            raise self._down(exc) from exc

    def _release_all(self, db: Any, keys: list[str]) -> None:
        for key in keys:
            self.release(None, key)
