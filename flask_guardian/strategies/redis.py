"""The redis strategy: sessions live in Redis (``SESSION_STRATEGY = "redis"``).

The cookie holds an opaque random token (256 bits from ``secrets``), as with the database
strategy; Redis stores the session under the SHA-256 of that token, never the token, with a
time to live equal to the session's deadline, so Redis forgets a session the moment it
ends. A request is one ``GET``. The user's data comes from the application's SQL users
table: it is copied into the session at sign-in and read again at every refresh
(``GUARDIAN_SESSION_UPDATE_AGE``), and a change made through the ORM (role, password,
deactivation, deletion) reaches the user's sessions at once, when its transaction commits
(``redis_changes.py``). With ``GUARDIAN_SESSION_CACHE`` a known session is served from
memory, without the ``GET`` (``cached_redis.py``).

Keys, all under ``GUARDIAN_REDIS_PREFIX`` (default ``"guardian:"``):

- ``s:<sha256 of the token>``: the session record (a string, TTL = its deadline);
- ``id:<session id>``: the digest of its token, so a session is found by its public id;
- ``u:<user id>``: a hash of the user's session ids to their digests (the device list).

The client is the app's one (``redis_client.py``): one connection pool per process, and
redis-py opens new connections in a forked child, so a pre-forking server is safe.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Request
from sqlalchemy import bindparam, select

from ..clients import client_agent, ip_network
from ..errors import ConfigurationError
from ..models import profile_columns, utcnow
from ..redis_client import KeptClients
from ..session import Session, SessionUser
from ..session_events import listen_weakly
from .base import (
    EXPIRED,
    REVOKED,
    Ended,
    Loaded,
    RequestInfo,
    SessionInfo,
    SessionStrategy,
    new_session_id,
    sha256_hex,
)
from .redis_changes import RedisUserChanges
from .redis_records import GONE, Record, down, encode_record, parse_record

if TYPE_CHECKING:
    from .cached_redis import CachedRedis

logger = logging.getLogger("flask_guardian")

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
#: At most this many records are kept worked out (one per live session making requests).
_KNOWN_MAX = 4096
#: A refresh's write: the new record, only if the stored one is still the one it read
#: (1); else what is stored now (nil when gone), for the refresh to decide on.
_SWAP = """
local stored = redis.call('GET', KEYS[1])
if stored == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  return 1
end
return stored
"""


class RedisStrategy(RedisUserChanges, SessionStrategy):
    """Server-side sessions in Redis: revocation is immediate in every process."""

    name = "redis"
    #: ``GUARDIAN_SESSION_CACHE`` may keep its sessions in memory (``cached_redis.py``).
    supports_session_cache = True
    #: Its invalidation channel is Redis pub/sub, whatever the SQL database.
    session_cache_channel = "redis"

    def __init__(self, state: Any) -> None:
        super().__init__(state)
        settings = self.settings
        if state.redis is None:
            raise ConfigurationError(
                "GUARDIAN_REDIS_URL",
                "the redis strategy needs a redis-py URL (redis://, rediss:// or unix://)",
            )
        # The app's one client (redis_client.py), shared with the lockout counters.
        self.redis: Any = state.redis.client
        self._errors: tuple[type[BaseException], ...] = state.redis.errors
        # The hot path's GET goes through a client per thread on a kept connection.
        self._kept = KeptClients(self.redis)
        prefix = settings.redis_prefix
        self._session_prefix = prefix + "s:"
        self._id_prefix = prefix + "id:"
        self._user_prefix = prefix + "u:"
        self._known: dict[bytes, Record] = {}
        users = self.users
        self._user_lookup = select(
            users.c.email, *profile_columns(users), users.c.uniquifier
        ).where(users.c.id == bindparam("uid"), users.c.is_active.is_(True))
        # A user change made through the ORM reaches Redis when its transaction commits
        # (not before: a rolled-back change must not end or alter any session).
        self._pending_key = f"guardian_redis_pending_{id(self)}"
        listen_weakly(self.db.session, "after_commit", self._apply_pending)
        listen_weakly(self.db.session, "after_rollback", self._drop_pending)
        #: The session cache (``GUARDIAN_SESSION_CACHE``), or None: then nothing of it runs.
        self.cache: CachedRedis | None = None
        if settings.session_cache:
            from .cached_redis import CachedRedis

            self.cache = CachedRedis(self)
            self.load = self.cache.make_load()  # type: ignore[method-assign,assignment]

    # -- the hot path ----------------------------------------------------------------

    def load(self, token: str, request: Request) -> Loaded | Ended | None:
        if _TOKEN_RE.fullmatch(token) is None:
            return None  # cannot be a token we issued: no round trip
        try:
            client = getattr(self._kept.local, "client", None) or self._kept.client()
            raw = client.get(self._session_prefix + sha256_hex(token))
        except self._errors as exc:
            raise down(exc) from exc
        if raw is None:
            return EXPIRED  # Redis forgets a session at its deadline
        record = self._known.get(raw)
        if record is None:
            record = self._parse(raw)
            if record is None:
                return REVOKED if raw == GONE else None
        now = time.time()
        if record.expires <= now:
            return EXPIRED
        loaded = record.loaded
        session = loaded.session
        if now >= record.refresh_at:
            refreshed = self._refresh(token, raw, record, now)
            if not isinstance(refreshed, Record):
                return refreshed  # revoked, expired or gone meanwhile
            record = refreshed
            loaded = record.loaded
            session = loaded.session
        agent_changed = request.environ.get("HTTP_USER_AGENT") != record.agent and (
            client_agent(request) != record.agent
        )
        if (agent_changed or self.settings.monitor_ip_network) and not self.check_client(
            session, request, agent_changed, ip_network(record.ip)
        ):
            return None
        return loaded

    def _record(self, raw: bytes) -> Record | None:
        """The record stored as ``raw``: worked out once, then from the cache."""
        return self._known.get(raw) or self._parse(raw)

    def _parse(self, raw: bytes) -> Record | None:
        record = parse_record(raw, self.name, self.settings.update_age)
        if record is None:
            return None  # not a record we wrote: treated as no session
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[raw] = record
        return record

    def _refresh(self, token: str, raw: bytes, record: Record,
                 now: float) -> Record | Ended | None:
        """Re-read the user from the SQL table, move the idle deadline on (capped by the
        absolute one) and write the record again, once per update age; the record now
        stored. The write happens only if the record is still ``raw`` (:data:`_SWAP`): a
        revocation that landed since the read stays one (REVOKED), and another process's
        refresh stands (its record is served; one marked for a re-read is refreshed)."""
        key = self._session_prefix + sha256_hex(token)
        for _ in range(3):
            session = record.loaded.session
            # On a connection of its own: the application's db.session is left untouched.
            with self.db.engine.connect() as connection:
                row = connection.execute(self._user_lookup, {"uid": session.user.id}).first()
            if row is None or row.uniquifier != record.uniquifier:
                self._delete([(session.id, sha256_hex(token))], session.user.id)
                return None
            user = SessionUser(session.user.id, row.email, row.name, row.role)
            expires = self.deadlines(datetime.fromtimestamp(now, UTC), session.auth_time,
                                     session.remember,
                                     datetime.fromtimestamp(record.absolute, UTC))[0]
            value = encode_record(session.id, user, record.uniquifier,
                                  session.auth_time.timestamp(), now, expires.timestamp(),
                                  record.absolute, record.ip, record.agent, session.remember,
                                  session.two_factor)
            found = self.swap(key, raw, value, expires.timestamp())
            if found == 1:
                return self._record(value.encode())
            if found is None:
                return EXPIRED
            if found == GONE:
                return REVOKED
            fresh = self._record(found)
            if fresh is None or fresh.expires <= now:
                return None if fresh is None else EXPIRED
            if now < fresh.refresh_at:
                return fresh  # another process refreshed it: its record stands
            raw, record = found, fresh  # marked for a re-read meanwhile: refresh that
        return record

    def swap(self, key: str, raw: bytes, value: str, expires: float) -> Any:
        """Store ``value`` at ``key`` until ``expires`` only if it still holds ``raw``: 1,
        else what it holds now (None when gone). EVAL, not EVALSHA: one command whatever
        the server's script cache holds (a refresh's write, once per update age)."""
        try:
            return self.redis.eval(_SWAP, 1, key, raw, value, int(expires * 1000))
        except self._errors as exc:
            raise down(exc) from exc

    # -- starting and ending sessions ------------------------------------------------

    def issue(self, user: Any, info: RequestInfo, *,
              auth_time: datetime | None = None, remember: bool = False,
              two_factor: bool = False) -> tuple[Session, str]:
        token = secrets.token_urlsafe(32)
        digest = sha256_hex(token)
        now = utcnow()
        auth_time = auth_time or now
        expires_at, absolute = self.deadlines(now, auth_time, remember)
        session_id = new_session_id()
        session_user = self.session_user(user)
        value = encode_record(session_id, session_user, user.uniquifier,
                              auth_time.timestamp(), now.timestamp(), expires_at.timestamp(),
                              absolute.timestamp(), info.ip, info.user_agent, remember,
                              two_factor)
        at_ms = int(expires_at.timestamp() * 1000)
        user_key = self._user_prefix + str(user.id)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self._session_prefix + digest, value, pxat=at_ms)
            pipe.set(self._id_prefix + session_id, digest,
                     pxat=int(absolute.timestamp() * 1000))
            pipe.hset(user_key, session_id, digest)
            # The index lives as long as the longest session it lists.
            pipe.expireat(user_key, int(absolute.timestamp()) + 1, gt=True)
            pipe.expireat(user_key, int(absolute.timestamp()) + 1, nx=True)
            pipe.execute()
        except self._errors as exc:
            raise down(exc) from exc
        session = Session(session_id, session_user, expires_at, self.name, auth_time, remember,
                          two_factor)
        return session, token

    def _delete(self, pairs: Iterable[tuple[str, str]], user_id: int | None,
                tombstone: bool = True) -> list[str]:
        """Delete sessions given as ``(id, digest)``; the ids of those that were live. With
        ``tombstone`` the record is replaced by :data:`GONE` until its own deadline (so
        the request that brings its cookie knows it was revoked, in the same one ``GET``);
        purging deletes it outright."""
        pairs = list(pairs)
        if not pairs:
            return []
        try:
            pipe = self.redis.pipeline(transaction=True)
            for sid, digest in pairs:
                if tombstone:
                    pipe.set(self._session_prefix + digest, GONE, xx=True, keepttl=True)
                else:
                    pipe.delete(self._session_prefix + digest)
                pipe.delete(self._id_prefix + sid)
                if user_id is not None:
                    pipe.hdel(self._user_prefix + str(user_id), sid)
            results = (pipe.execute() if self.cache is None  # the cache announces it
                       else self.cache.execute(pipe, [sid for sid, _ in pairs]))
        except self._errors as exc:
            raise down(exc) from exc
        step = 3 if user_id is not None else 2
        return [sid for (sid, _), deleted in zip(pairs, results[::step], strict=True)
                if deleted]

    def _digests(self, session_ids: list[str], user_id: int | None) -> list[tuple[str, str]]:
        try:
            if user_id is not None:
                found = self.redis.hmget(self._user_prefix + str(user_id), session_ids)
            else:
                found = self.redis.mget([self._id_prefix + sid for sid in session_ids])
        except self._errors as exc:
            raise down(exc) from exc
        return [(sid, digest.decode("ascii")) for sid, digest in zip(session_ids, found,
                                                                      strict=True) if digest]

    def revoke(self, session_ids: Iterable[str], user_id: int | None = None) -> list[str]:
        ids = list(session_ids)
        if not ids:
            return []
        if user_id is None:
            # Find each session's user, to keep the device index tidy.
            ended: list[str] = []
            for sid, digest in self._digests(ids, None):
                owner = self._owner(digest)
                ended += self._delete([(sid, digest)], owner)
            return ended
        return self._delete(self._digests(ids, user_id), user_id)

    def _owner(self, digest: str) -> int | None:
        try:
            raw = self.redis.get(self._session_prefix + digest)
        except self._errors as exc:
            raise down(exc) from exc
        if raw is None:
            return None
        record = self._record(raw)
        return record.loaded.session.user.id if record is not None else None

    def _user_sessions(self, user_id: int) -> dict[str, str]:
        try:
            index = self.redis.hgetall(self._user_prefix + str(user_id))
        except self._errors as exc:
            raise down(exc) from exc
        return {sid.decode("ascii"): digest.decode("ascii") for sid, digest in index.items()}

    def revoke_user(self, user_id: int, *, except_id: str | None = None) -> list[str]:
        pairs = [(sid, d) for sid, d in self._user_sessions(user_id).items() if sid != except_id]
        return self._delete(pairs, user_id)

    def purge_expired(self) -> int:
        """Delete sessions past their deadline and device-index entries whose session is
        gone; returns how many sessions went. Redis already forgets a session at its
        deadline (its TTL): this tidies the per-user indexes, and catches a session whose
        TTL a clock disagreement left behind (deadlines are decided in Python)."""
        removed = 0
        now = time.time()
        try:
            for key in self.redis.scan_iter(match=self._user_prefix + "*", count=500):
                index = self.redis.hgetall(key)
                if not index:
                    continue
                pairs = [(sid.decode("ascii"), d.decode("ascii")) for sid, d in index.items()]
                raws = self.redis.mget([self._session_prefix + d for _, d in pairs])
                user_id = int(key.decode("utf-8").rsplit(":", 1)[1])
                dead: list[tuple[str, str]] = []
                for pair, raw in zip(pairs, raws, strict=True):
                    record = None if raw is None else self._record(raw)
                    if record is None or record.expires <= now:
                        dead.append(pair)
                if dead:
                    removed += len(self._delete(dead, user_id, tombstone=False))
        except self._errors as exc:
            raise down(exc) from exc
        return removed

    def list(self, user_id: int, current_id: str | None) -> list[SessionInfo]:
        index = self._user_sessions(user_id)
        if not index:
            return []
        sids = list(index)
        try:
            raws = self.redis.mget([self._session_prefix + index[sid] for sid in sids])
        except self._errors as exc:
            raise down(exc) from exc
        now = time.time()
        sessions: list[SessionInfo] = []
        gone: list[str] = []
        for sid, raw in zip(sids, raws, strict=True):
            record = None if raw is None else self._record(raw)
            if record is None or record.expires <= now or record.loaded.session.user.id != user_id:
                gone.append(sid)
                continue
            last_seen = record.refresh_at - self.settings.update_age
            sessions.append(SessionInfo(
                sid, user_id, self.name, record.loaded.session.auth_time,
                datetime.fromtimestamp(last_seen, UTC),
                datetime.fromtimestamp(record.expires, UTC),
                record.ip, record.agent, sid == current_id, record.loaded.session.two_factor,
            ))
        if gone:
            try:
                self.redis.hdel(self._user_prefix + str(user_id), *gone)
            except self._errors as exc:
                raise down(exc) from exc
        sessions.sort(key=lambda s: s.last_seen_at, reverse=True)
        return sessions

