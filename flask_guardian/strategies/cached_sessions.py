"""The database strategy with ``GUARDIAN_SESSION_CACHE``: the load that serves a known
session from memory, the round trip that fills the cache, and the invalidation messages
its writes send (``session_cache.py`` has the cache and the rules, ``pg_listen.py`` and
``redis_channel.py`` the channels).

With the cache off none of this exists: the strategy's own ``load`` runs, unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Request

from ..clients import client_agent, ip_network
from ..pg_listen import PgListener, notify
from ..redis_channel import AfterCommit, RedisChannel
from ..session_cache import Entry, SessionCache, messages
from .base import EXPIRED, REVOKED, Ended, Loaded, sha256_hex

if TYPE_CHECKING:
    from .database import DatabaseStrategy

#: The channel's name: PostgreSQL identifiers end at 63 bytes; Redis's under the prefix.
CHANNEL = "guardian_cache_{table}"


class CachedSessions:
    """The cache of one database strategy, its channel, and the load that uses them."""

    def __init__(self, strategy: DatabaseStrategy, transport: str) -> None:
        self.strategy = strategy
        self.cache = cache = SessionCache()
        self.transport = transport
        st = strategy.settings
        name = CHANNEL.format(table=strategy.sessions.name)[:63]
        self.channel_name = name
        self.listener: PgListener | None = None
        self.redis_channel: RedisChannel | None = None
        self._after_commit: AfterCommit | None = None
        if transport == "postgresql":
            self.listener = PgListener(name, cache.apply, cache.went_up, cache.went_down,
                                       st.db_connect_timeout)
        else:
            assert strategy.state.redis is not None
            self.redis_channel = channel = RedisChannel(
                strategy.state.redis, st.redis_prefix + name, cache.apply,
                on_up=cache.went_up, on_down=cache.went_down)
            # Published once the revoking transaction commits: a rolled-back change is
            # never announced, and a Redis failure cannot fail the application's commit.
            self._after_commit = AfterCommit(strategy.db.session, channel,
                                             f"guardian_cache_{id(self)}")

    def listen(self) -> None:
        """Make sure this process listens (its first request, or the first after a fork)."""
        if self.listener is not None:
            self.listener.listen(self.strategy.db.engine.url)
        else:
            assert self.redis_channel is not None
            self.redis_channel.listen()

    def close(self) -> None:
        """Stop this process's listener; the cache is not used until it listens again."""
        if self.listener is not None:
            self.listener.close()
        if self.redis_channel is not None:
            self.redis_channel.close()
        self.cache.went_down()

    # -- invalidation ----------------------------------------------------------------

    def announce(self, db_session: Any, session_ids: list[str],
                 user_id: int | None = None) -> None:
        """The named sessions (and, with ``user_id``, every session of that user) changed
        in ``db_session``'s transaction: forget them here now, and in every process once
        the transaction commits."""
        self.cache.evict(session_ids, user_id)
        for payload in messages(session_ids, user_id):
            if self.listener is not None:
                notify(db_session, self.channel_name, payload)
            else:
                assert self._after_commit is not None
                self._after_commit.add(db_session, payload)

    # -- the hot path ----------------------------------------------------------------

    def make_load(self) -> Callable[[str, Request], Loaded | Ended | None]:
        """The strategy's ``load`` with the cache (:func:`cached_load`)."""
        return cached_load(self)

    def load_through(self, token: str, request: Request) -> Loaded | Ended | None:
        """The round trip (as without the cache), keeping the result when the channel is
        up: the first request of a session, one whose deadline or refresh is due, and
        every request while the channel is down."""
        cache, strategy = self.cache, self.strategy
        if not cache.live:
            self.listen()
            return type(strategy).load(strategy, token, request)
        if token in cache.entries:
            cache.drop(token)  # its deadline or refresh is due: the row decides
        if not strategy.is_token(token):
            return None
        generation = cache.generation  # before the read: see session_cache.py
        row = strategy.reader.first_value(sha256_hex(token))
        if row is None:
            return REVOKED
        known = strategy.known_row(row)
        loaded, expires_at, refresh_at, ip, signed_agent = known
        now = time.time()
        if expires_at <= now:
            return EXPIRED
        if now >= refresh_at:
            session = strategy._refresh(loaded.session, row)
            loaded = Loaded(session)
            expires_at = session.expires.timestamp()
            refresh_at = now + strategy.settings.update_age
        session = loaded.session
        cache.put(token, generation, Entry(loaded, min(expires_at, refresh_at), ip,
                                           signed_agent, session.id, session.user.id))
        agent_changed = request.environ.get("HTTP_USER_AGENT") != signed_agent and (
            client_agent(request) != signed_agent
        )
        if (agent_changed or strategy.settings.monitor_ip_network) and not (
            strategy.check_client(session, request, agent_changed, ip_network(ip))
        ):
            return None
        return loaded


def cached_load(cached: Any) -> Callable[[str, Request], Loaded | Ended | None]:
    """The ``load`` of a strategy with the session cache (``cached``: its
    :class:`CachedSessions`, or the redis strategy's ``CachedRedis``): a hit is a
    dictionary read and the client checks; anything else goes to ``cached.load_through``
    (the round trip, which fills the cache)."""
    entries = cached.cache.entries  # emptied in place, never replaced
    through = cached.load_through
    check_client = cached.strategy.check_client
    monitor = cached.strategy.settings.monitor_ip_network

    def load(token: str, request: Request) -> Loaded | Ended | None:
        entry = entries.get(token)
        if entry is None or time.time() >= entry.until:
            return through(token, request)  # type: ignore[no-any-return]
        signed_agent = entry.signed_agent
        agent_changed = request.environ.get("HTTP_USER_AGENT") != signed_agent and (
            client_agent(request) != signed_agent
        )
        if (agent_changed or monitor) and not check_client(
            entry.loaded.session, request, agent_changed, ip_network(entry.ip)
        ):
            return None
        return entry.loaded  # type: ignore[no-any-return]

    return load
