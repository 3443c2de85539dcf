"""Where refresh tokens are kept: in the strategy's own storage, behind one small
interface (:class:`RefreshStore`). The SQL session registry's strategies (database, jwt)
keep them in ``guardian_refresh_tokens`` beside ``guardian_sessions``; the redis strategy
in Redis, beside its session records. Only a token's SHA-256 is stored.

A store also answers for the session a refresh token belongs to (:meth:`session_state`):
alive (not revoked, not past its idle or absolute deadline, its user active and the same
account), and, on a refresh, touched (last seen now, the idle deadline moved on, capped by
the absolute one), since a refresh is the API client's activity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Column, Index, Integer, Table, and_, bindparam, select, update

from .models import UTCDateTime, declared_on, exact_string, profile_columns, utcnow
from .session import SessionUser
from .state import AppState
from .storage import unavailable
from .strategies.base import SessionStrategy
from .strategies.redis import RedisStrategy
from .strategies.redis_records import GONE, encode_record
from .strategies.registry import RegistryStrategy, bound_to_user


class Found(NamedTuple):
    """A known refresh token: its session and user, and when it was spent (epoch
    milliseconds), None while it is live."""

    session_id: str
    user_id: int
    spent_ms: int | None


class SessionState(NamedTuple):
    """The live session behind a refresh token, as the next access token states it."""

    user: SessionUser
    version: int
    auth_time: datetime
    expires: datetime
    absolute: datetime


class RefreshStore(ABC):
    """Refresh tokens of one app, by the SHA-256 hex of the token."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.strategy: Any = state.strategy

    @abstractmethod
    def add(self, digest: str, session_id: str, user_id: int, until: datetime) -> None:
        """Keep a new, unspent token of the session until ``until`` (its absolute
        deadline). In the application's transaction: the caller commits."""

    @abstractmethod
    def find(self, digest: str, *, lock: bool = False) -> Found | None:
        """The token, spent or not, or None for one this store does not know. With
        ``lock``, concurrent refreshes of the same token wait here until the caller's
        transaction ends (a row lock, where the store has them)."""

    @abstractmethod
    def spend(self, digest: str, now_ms: int) -> bool:
        """Mark the token spent unless it already is, atomically: of several concurrent
        calls exactly one returns True. The caller commits (a win) or rolls back."""

    @abstractmethod
    def session_state(self, session_id: str, user_id: int, now: datetime, *,
                      touch: bool) -> SessionState | None:
        """The session, if it is alive; with ``touch``, its activity is recorded."""

    @abstractmethod
    def live_count(self, session_id: str) -> int:
        """How many unspent tokens the session has (one, in a healthy chain)."""

    def forget(self, session_id: str) -> None:  # noqa: B027 (optional: Redis expires them)
        """Delete the session's tokens (it ended). In the application's transaction."""

    def purge_expired(self) -> int:
        """Delete the tokens no session can use any more; how many went (Redis expires
        its own: 0). Called by ``guardian.purge_expired`` (``flask guardian purge``)."""
        return 0


# -- the SQL registry ------------------------------------------------------------------

def refresh_table(db: Any) -> Table:
    """``guardian_refresh_tokens`` on ``db``'s metadata (so ``db.create_all()`` and
    Alembic see it): one row per refresh token ever issued for a live session; spent rows
    stay until the session ends, so a replay is recognised as one."""
    table: Table | None = declared_on(db).get("refresh_tokens")
    if table is None:
        table = declared_on(db)["refresh_tokens"] = Table(
            "guardian_refresh_tokens", db.metadata,
            Column("token_hash", exact_string(64), primary_key=True),
            Column("session_id", exact_string(32), nullable=False),
            Column("user_id", Integer, nullable=False),
            # Epoch milliseconds, exact on every database: a racing duplicate re-signs the
            # access token with the same iat.
            Column("spent_ms", BigInteger, nullable=True),
            # The session's absolute deadline: no use for the row after it (purge).
            Column("expires_at", UTCDateTime, nullable=False),
            Index("ix_guardian_refresh_tokens_session_id", "session_id"),
            Index("ix_guardian_refresh_tokens_expires_at", "expires_at"),
            extend_existing=True,
        )
    return table


class SQLRefreshStore(RefreshStore):
    """Refresh tokens as rows of ``guardian_refresh_tokens``, in the app's transaction.
    A spend locks the row (``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB) and marks
    it with a conditional ``UPDATE``: concurrent refreshes wait for the first to commit
    and then find it spent."""

    def __init__(self, state: AppState) -> None:
        super().__init__(state)
        self.table = refresh_table(state.db)
        t = self.table
        s, u = state.models.session.__table__, state.models.user.__table__
        self._row = select(t.c.session_id, t.c.user_id, t.c.spent_ms).where(
            t.c.token_hash == bindparam("digest"))
        self._spend = update(t).where(t.c.token_hash == bindparam("digest"),
                                      t.c.spent_ms.is_(None)).values(spent_ms=bindparam("now"))
        self._session = (
            select(s.c.created_at, s.c.expires_at, s.c.absolute_expires_at, s.c.remember,
                   u.c.email, *profile_columns(u), u.c.session_version)
            .select_from(s.join(u, bound_to_user(s, u)))
            .where(s.c.id == bindparam("sid"), s.c.user_id == bindparam("uid"),
                   s.c.revoked_at.is_(None), u.c.is_active.is_(True))
        )
        self._touch = update(s).where(s.c.id == bindparam("sid")).values(
            last_seen_at=bindparam("now"), expires_at=bindparam("expires"))

    def add(self, digest: str, session_id: str, user_id: int, until: datetime) -> None:
        self.state.db.session.execute(self.table.insert().values(
            token_hash=digest, session_id=session_id, user_id=user_id, spent_ms=None,
            expires_at=until))

    def find(self, digest: str, *, lock: bool = False) -> Found | None:
        query = self._row.with_for_update() if lock else self._row
        row = self.state.db.session.execute(query, {"digest": digest}).first()
        if row is None:
            return None
        spent = None if row.spent_ms is None else int(row.spent_ms)
        return Found(row.session_id, row.user_id, spent)

    def spend(self, digest: str, now_ms: int) -> bool:
        # Conditional: on SQLite, which takes no row lock, the second of two racing
        # refreshes waits for the database lock and then matches no row.
        done = self.state.db.session.execute(self._spend, {"digest": digest, "now": now_ms})
        return bool(done.rowcount == 1)

    def session_state(self, session_id: str, user_id: int, now: datetime, *,
                      touch: bool) -> SessionState | None:
        db_session = self.state.db.session
        row = db_session.execute(self._session, {"sid": session_id, "uid": user_id}).first()
        if row is None or row.expires_at <= now or row.absolute_expires_at <= now:
            return None
        expires = row.expires_at
        if touch:
            expires, _ = self.strategy.deadlines(now, row.created_at, row.remember,
                                                 row.absolute_expires_at)
            db_session.execute(self._touch, {"sid": session_id, "now": now,
                                             "expires": expires})
        user = SessionUser(user_id, row.email, row.name, row.role)
        return SessionState(user, row.session_version or 0, row.created_at, expires,
                            row.absolute_expires_at)

    def live_count(self, session_id: str) -> int:
        t = self.table
        rows = self.state.db.session.execute(select(t.c.token_hash).where(
            and_(t.c.session_id == session_id, t.c.spent_ms.is_(None)))).all()
        return len(rows)

    def forget(self, session_id: str) -> None:
        t = self.table
        self.state.db.session.execute(t.delete().where(t.c.session_id == session_id))

    def purge_expired(self) -> int:
        """Rows past their session's absolute deadline, and rows of ended sessions."""
        t, s = self.table, self.state.models.session.__table__
        ended = select(s.c.id).where(s.c.revoked_at.is_not(None) | (s.c.expires_at <= utcnow()))
        db_session = self.state.db.session
        gone = db_session.execute(t.delete().where(
            (t.c.expires_at <= utcnow()) | t.c.session_id.in_(ended))).rowcount
        db_session.commit()
        return int(gone or 0)


# -- Redis -----------------------------------------------------------------------------

#: Spend a token atomically: 1 when this call spent it, 0 when it was spent already (or
#: is gone).
_SPEND = """
local spent = redis.call('HGET', KEYS[1], 'spent')
if spent ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1])
return 1
"""


class RedisRefreshStore(RefreshStore):
    """Refresh tokens as Redis hashes ``<prefix>rt:<digest>`` (session, user, when spent),
    expiring at the session's absolute deadline; a spend is one Lua script, atomic."""

    def __init__(self, state: AppState) -> None:
        super().__init__(state)
        strategy: RedisStrategy = self.strategy
        self.redis: Any = strategy.redis
        self._errors = strategy._errors
        prefix = state.settings.redis_prefix
        self._prefix = prefix + "rt:"
        self._live = prefix + "rtlive:"  # session id -> its one unspent token's digest
        self._spend = self.redis.register_script(_SPEND)
        users = state.models.user.__table__
        self._user = select(users.c.email, *profile_columns(users), users.c.uniquifier,
                            users.c.session_version).where(
            users.c.id == bindparam("uid"), users.c.is_active.is_(True))

    def add(self, digest: str, session_id: str, user_id: int, until: datetime) -> None:
        at_ms = int(until.timestamp() * 1000)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self._prefix + digest, mapping={"sid": session_id, "uid": user_id,
                                                      "spent": ""})
            pipe.pexpireat(self._prefix + digest, at_ms)
            pipe.set(self._live + session_id, digest, pxat=at_ms)
            pipe.execute()
        except self._errors as exc:
            raise unavailable(exc, "redis refresh tokens") from exc

    def find(self, digest: str, *, lock: bool = False) -> Found | None:
        try:  # no lock: the spend is one atomic script
            sid, uid, spent = self.redis.hmget(self._prefix + digest, ["sid", "uid", "spent"])
        except self._errors as exc:
            raise unavailable(exc, "redis refresh tokens") from exc
        if sid is None or uid is None:
            return None
        return Found(sid.decode("ascii"), int(uid), int(spent) if spent else None)

    def spend(self, digest: str, now_ms: int) -> bool:
        try:
            return bool(self._spend(keys=[self._prefix + digest], args=[now_ms]) == 1)
        except self._errors as exc:
            raise unavailable(exc, "redis refresh tokens") from exc

    def session_state(self, session_id: str, user_id: int, now: datetime, *,
                      touch: bool) -> SessionState | None:
        strategy: RedisStrategy = self.strategy
        try:
            digest = self.redis.get(strategy._id_prefix + session_id)
            raw = None if digest is None else self.redis.get(
                strategy._session_prefix + digest.decode("ascii"))
        except self._errors as exc:
            raise unavailable(exc, "redis") from exc
        record = None if raw is None or raw == GONE else strategy._record(raw)
        if record is None or raw is None or record.expires <= now.timestamp() or (
                record.loaded.session.user.id != user_id):
            return None
        with self.state.db.engine.connect() as connection:  # db.session left untouched
            row = connection.execute(self._user, {"uid": user_id}).first()
        if row is None or row.uniquifier != record.uniquifier:
            return None
        session = record.loaded.session
        user = SessionUser(user_id, row.email, row.name, row.role)
        absolute = datetime.fromtimestamp(record.absolute, UTC)
        expires = session.expires
        if touch:
            expires, _ = strategy.deadlines(now, session.auth_time, session.remember, absolute)
            value = encode_record(session.id, user, record.uniquifier,
                                  session.auth_time.timestamp(), now.timestamp(),
                                  expires.timestamp(), record.absolute, record.ip,
                                  record.agent, session.remember, session.two_factor)
            # Only over the record read above: a revocation since then stays one.
            found = strategy.swap(strategy._session_prefix + digest.decode("ascii"), raw,
                                  value, expires.timestamp())
            if found != 1:
                return None
        return SessionState(user, row.session_version or 0, session.auth_time, expires,
                            absolute)

    def live_count(self, session_id: str) -> int:
        try:
            digest = self.redis.get(self._live + session_id)
            spent = None if digest is None else self.redis.hget(
                self._prefix + digest.decode("ascii"), "spent")
        except self._errors as exc:
            raise unavailable(exc, "redis refresh tokens") from exc
        return 1 if spent == b"" else 0


def store_for(state: AppState) -> RefreshStore | None:
    """The refresh store for the app's strategy: the SQL registry's or Redis's; an
    application's own strategy may offer one as ``refresh_store(state)``. None: API tokens
    are not available with this strategy (the token routes answer 404)."""
    strategy: SessionStrategy = state.strategy
    own = getattr(strategy, "refresh_store", None)
    if callable(own):
        store: RefreshStore = own(state)
        return store
    if isinstance(strategy, RegistryStrategy):
        return SQLRefreshStore(state)
    if isinstance(strategy, RedisStrategy):
        return RedisRefreshStore(state)
    return None
