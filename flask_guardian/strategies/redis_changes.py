"""What a user change means for the redis strategy's sessions (``user_changes.py`` decides
when one happened): the sessions it ends are tombstoned, the others marked for a re-read of
the user, once the application's transaction commits (a rolled-back change ends or alters
nothing). A mixin of :class:`~flask_guardian.strategies.redis.RedisStrategy`, which holds
the keys and the client it uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StorageUnavailable
from .redis_records import GONE, down, refresh_due

if TYPE_CHECKING:
    from .cached_redis import CachedRedis


class RedisSessions(Protocol):
    """What these methods use of the strategy that mixes them in (``RedisStrategy``)."""

    redis: Any
    cache: CachedRedis | None
    _errors: tuple[type[BaseException], ...]
    _session_prefix: str
    _pending_key: str

    def _user_sessions(self, user_id: int) -> dict[str, str]: ...

    def _delete(self, pairs: Iterable[tuple[str, str]], user_id: int | None,
                tombstone: bool = True) -> list[str]: ...

    def _expire_refresh(self, digests: list[str], user_id: int) -> None: ...


class RedisUserChanges:
    """``on_user_changed`` and the work it leaves for after the commit (``self`` is the
    strategy that mixes this in: :class:`RedisSessions` says what of it they use)."""

    def on_user_changed(
        self: RedisSessions, db_session: Any, user_id: int, version: int, *, end: str | None,
        keep: str | None = None,
    ) -> list[str]:
        """Ends (``end``) or marks for a re-read (role, name, email change) the user's
        sessions once the transaction commits. Returns the ids it will end. A Redis that
        cannot answer now must not fail the application's commit: the work is then done
        after the commit, or, failing that too, at each session's next refresh."""
        try:
            index = self._user_sessions(user_id)
        except StorageUnavailable:
            pending = db_session.info.setdefault(self._pending_key, [])
            pending.append((user_id, None, [], (end, keep)))
            return []
        if end == "others" and keep is not None:
            ending = {sid: d for sid, d in index.items() if sid != keep}
        elif end is not None:
            ending = index
        else:
            ending = {}
        stale = {sid: d for sid, d in index.items() if sid not in ending}
        pending = db_session.info.setdefault(self._pending_key, [])
        pending.append((user_id, list(ending.items()), list(stale.values()), None))
        return list(ending)

    def _apply_pending(self: RedisSessions, db_session: Any) -> None:
        """After the commit: the SQL change stands, so a Redis failure here must not turn
        the application's successful commit into an error. It is logged (one line); the
        sessions meet the change at their next refresh, when the user is read again from
        SQL (within ``GUARDIAN_SESSION_UPDATE_AGE``)."""
        for user_id, ending, stale, deferred in db_session.info.pop(self._pending_key, []):
            try:
                if ending is None:  # the index could not be read at flush time
                    end, keep = deferred
                    index = self._user_sessions(user_id)
                    gone = {s: d for s, d in index.items()
                            if end == "all" or (end == "others" and s != keep)}
                    ending = list(gone.items())
                    stale = [d for s, d in index.items() if s not in gone]
                self._delete(ending, user_id)
                self._expire_refresh(stale, user_id)
            except StorageUnavailable:
                continue  # logged by down(); the refresh re-reads the user

    def _drop_pending(self: RedisSessions, db_session: Any) -> None:
        db_session.info.pop(self._pending_key, None)

    def _expire_refresh(self: RedisSessions, digests: list[str], user_id: int) -> None:
        """Make each session of ``user_id`` listed re-read its user on its next request."""
        if not digests:
            return
        keys = [self._session_prefix + d for d in digests]
        try:
            raws = self.redis.mget(keys)
            pipe = self.redis.pipeline(transaction=False)
            for key, raw in zip(keys, raws, strict=True):
                if raw is None or raw == GONE:
                    continue
                pipe.set(key, refresh_due(raw), xx=True, keepttl=True)
            if self.cache is None:
                pipe.execute()
            else:  # the cached sessions of the user are forgotten everywhere
                self.cache.execute(pipe, [], user_id)
        except self._errors as exc:
            raise down(exc) from exc
