"""How the processes of a self-verifying strategy (jwt) learn of revocations made by the
others: the SQL feed ``guardian_revocations``, read at most every
``GUARDIAN_JWT_REVOCATION_INTERVAL`` seconds, and, with ``GUARDIAN_REDIS_URL`` set, a
Redis channel that brings each revocation at once.

Every revocation (a session ended; a user whose role, password or status changed) is
applied at once in the process that made it and written to the feed in its transaction.
With Redis it is also published once that transaction commits; every process listens on
the channel (a daemon thread, see ``redis_channel.py``) and applies what it hears to the
same in-process state the feed's poll fills.

The poll keeps running with Redis: pub/sub loses what is published while a listener is
cut off, and a process that could not publish cannot tell the others. Whatever Redis does
(down, cut, stalled, a publish that failed), a revoked token is refused everywhere within
the poll's bound, as without Redis.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from ..lookup import RowReader, as_utc
from ..models import utcnow
from ..redis_channel import AfterCommit, RedisChannel
from ..storage import is_storage_error, unavailable
from .base import is_session_id
from .registry import RegistryStrategy

if TYPE_CHECKING:
    from ..state import AppState

#: A revocation row is read again for this long after it was written, so a transaction
#: that commits a little after its rows were stamped is not missed by a poll.
POLL_OVERLAP = timedelta(seconds=60)
#: Seconds a process may go past the revocation interval without a successful read of the
#: feed before it refuses tokens: room for one read in flight, no more.
FEED_GRACE = 1.0
#: After a failed read of the feed, the next try waits this long (one request per second
#: per process tries the database; the others get a 503 at once).
FEED_RETRY = 1.0
#: The channel's name under ``GUARDIAN_REDIS_PREFIX``.
CHANNEL = "jwt:revoked"


class RevocationFeedStrategy(RegistryStrategy):
    """A registry strategy whose processes keep, in memory, the sessions revoked
    (``_revoked``: session id -> when its tokens are dead anyway) and the lowest session
    version still good per user (``_versions``), filled by the feed and the channel."""

    def __init__(self, state: AppState) -> None:
        super().__init__(state)
        st = self.settings
        # The strategy's options (its config_keys) carry the interval: jwt's
        # GUARDIAN_JWT_REVOCATION_INTERVAL.
        self._interval = float(st.strategy_options.revocation_interval)
        #: No token outlives this (the longer absolute lifetime: "remember me" or not).
        self._longest = max(st.max_age, st.remember_max_age)
        self._revoked: dict[str, float] = {}  # session id -> when its tokens are dead anyway
        self._versions: dict[int, int] = {}  # user id -> lowest session_version still good
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._poll_since: datetime | None = None
        #: Until when the last successful read of the feed vouches for cached tokens.
        self._fresh_until = 0.0
        self._retry_at = 0.0
        # Set once the process's first read of the feed has ended (either way): requests
        # that arrive meanwhile wait for it (bounded) rather than get a start-up 503.
        self._first_read = threading.Event()
        revocations = self.models.revocation.__table__
        self._revocations = revocations
        self._feed = select(
            revocations.c.session_id, revocations.c.user_id, revocations.c.user_version,
            revocations.c.expires_at,
        ).where(revocations.c.created_at >= bindparam("since"))
        # Read on a connection of its own, bounded like the database strategy's lookup, and
        # leaving no transaction open on the app's session (whose teardown would roll it
        # back on a connection that may have died since).
        self.reader = RowReader(self.db, self._feed, timeout=st.db_statement_timeout,
                                connect_timeout=st.db_connect_timeout)
        #: The Redis channel revocations go through (None without ``GUARDIAN_REDIS_URL``).
        self.revocation_channel: RedisChannel | None = None
        if state.redis is not None:
            self.revocation_channel = RedisChannel(state.redis, st.redis_prefix + CHANNEL,
                                                   self._hear)
            # Published when the revoking transaction commits (a failed publish leaves the
            # other processes the feed's next poll).
            self._after_commit = AfterCommit(self.db.session, self.revocation_channel,
                                             f"guardian_revocations_{id(self)}")
            # A forked worker has none of its parent's threads: its first token polls (which
            # starts its own listener) instead of waiting for the parent's next poll.
            os.register_at_fork(after_in_child=functools.partial(_poll_now, weakref.ref(self)))

    # -- writing revocations ---------------------------------------------------------

    def _feed_expiry(self) -> datetime:
        # No token outlives its session's absolute deadline; after that the row is moot.
        return utcnow() + timedelta(seconds=self._longest + self.settings.jwt_leeway)

    def _dead_after(self) -> float:
        return time.time() + self._longest + self.settings.jwt_leeway

    def on_revoked(self, session_ids: list[str], user_id: int | None) -> None:
        dead_after = self._dead_after()
        for sid in session_ids:
            self._revoked[sid] = dead_after
        now, expires = utcnow(), self._feed_expiry()
        self.db.session.execute(
            self._revocations.insert(),
            [
                {"session_id": sid, "user_id": user_id, "created_at": now, "expires_at": expires}
                for sid in session_ids
            ],
        )
        self._announce(self.db.session, {"sessions": session_ids})

    def on_user_changed(
        self, db_session: Any, user_id: int, version: int, *, end: str | None,
        keep: str | None = None,
    ) -> list[str]:
        ended = super().on_user_changed(db_session, user_id, version, end=end, keep=keep)
        if self._versions.get(user_id, -1) < version:
            self._versions[user_id] = version
        db_session.execute(
            self._revocations.insert().values(
                user_id=user_id, user_version=version, created_at=utcnow(),
                expires_at=self._feed_expiry(),
            )
        )
        self._announce(db_session, {"user": user_id, "version": version})
        return ended

    # -- the Redis channel -----------------------------------------------------------

    def _announce(self, db_session: Any, message: dict[str, Any]) -> None:
        """Publish ``message`` once ``db_session``'s transaction commits."""
        if self.revocation_channel is not None:
            self._after_commit.add(db_session, json.dumps(message))

    def _hear(self, data: bytes) -> None:
        """Apply a message from the channel, as a poll applies a feed row. Anything else
        on the channel is ignored: a message can only revoke (add a session, raise a
        version), never bring a token back."""
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        sessions = message.get("sessions")
        if isinstance(sessions, list):
            dead_after = self._dead_after()
            for sid in sessions:
                if is_session_id(sid):
                    self._revoked[sid] = dead_after
        user, version = message.get("user"), message.get("version")
        if type(user) is int and type(version) is int and (
            self._versions.get(user, -1) < version
        ):
            self._versions[user] = version

    # -- reading the feed ------------------------------------------------------------

    def _poll(self, now: float) -> None:
        """Read revocations written since the last successful read (by any process). A
        failure is logged (rate-limited) and retried after :data:`FEED_RETRY` seconds;
        meanwhile ``load`` refuses tokens once the last good read is too old. With Redis,
        also make sure this process listens on the channel (first use, or a fork)."""
        if self.revocation_channel is not None:
            self.revocation_channel.listen()
        interval = self._interval
        with self._lock:
            busy = now < self._next_poll or now < self._retry_at
        if busy:  # another thread reads it, or tried just now
            if not self._first_read.is_set():
                st = self.settings
                self._first_read.wait((st.db_connect_timeout or 5) + (st.db_statement_timeout or 5))
            return
        with self._lock:
            if now < self._next_poll or now < self._retry_at:
                return
            self._retry_at = now + FEED_RETRY
            # Other threads keep using the cache while the last read still vouches for it.
            self._next_poll = min(now + interval, self._fresh_until)
            since = self._poll_since
            started = datetime.fromtimestamp(now, UTC)
            if since is None:  # first poll: anything still able to matter
                since = started - timedelta(seconds=self._longest)
        try:
            rows = self.reader.all({"since": since})
        except Exception as exc:
            self._first_read.set()
            if not is_storage_error(exc):
                raise
            unavailable(exc, "jwt revocation feed")  # logs, rate-limited
            return
        # Only a read that succeeded moves the window on: after a failed one (database
        # briefly unreachable) the next read starts where the last good one left off.
        self._poll_since = started - POLL_OVERLAP
        for sid, user_id, user_version, expires_at in rows:
            if sid is not None:
                self._revoked[sid] = as_utc(expires_at).timestamp()
            elif user_id is not None and user_version is not None and (
                self._versions.get(user_id, -1) < user_version
            ):
                self._versions[user_id] = user_version
        if len(self._revoked) > 1024:
            # Pruned in place: a revocation the listener or a request thread adds
            # meanwhile must not be lost with a replaced dict. (list() first: they may add
            # to it while it is read.)
            for sid, dead_after in list(self._revoked.items()):
                if dead_after <= now:
                    self._revoked.pop(sid, None)
        # Applied before the cache may be trusted again.
        with self._lock:
            self._fresh_until = now + interval + FEED_GRACE
            self._next_poll = now + interval
            self._retry_at = 0.0
        self._first_read.set()


def _poll_now(ref: weakref.ref[RevocationFeedStrategy]) -> None:
    strategy = ref()
    if strategy is not None:
        strategy._next_poll = 0.0
