"""The redis strategy with ``GUARDIAN_SESSION_CACHE``: the load that serves a known session
from memory (no ``GET``), the ``GET`` that fills the cache, and the invalidation messages
its writes send on Redis pub/sub (``session_cache.py`` has the cache and its rules,
``redis_channel.py`` the channel).

Every write that ends or alters a session (the strategy's ``_delete`` and
``_expire_refresh``) publishes its message in the same pipeline as the write: inside the
``MULTI``/``EXEC`` of a revocation, so the message leaves exactly when the records change,
never without them. A refresh moves a session's deadlines later, never earlier, and every
process's entry falls due no later than the refresh, so a refresh sends nothing: the next
request of another process reads the moved record (and writes nothing).

With the cache off none of this exists: the strategy's own ``load`` runs, unchanged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Request

from ..clients import client_agent, ip_network
from ..redis_channel import RedisChannel
from ..session_cache import Entry, SessionCache, messages
from .base import EXPIRED, REVOKED, Ended, Loaded, sha256_hex
from .cached_sessions import cached_load
from .redis_records import GONE, Record, down

if TYPE_CHECKING:
    from .redis import RedisStrategy

#: The channel's name, under ``GUARDIAN_REDIS_PREFIX``.
CHANNEL = "guardian_cache_redis"
#: The shape of a token the strategy issues (``secrets.token_urlsafe(32)``, as redis.py).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class CachedRedis:
    """The cache of one redis strategy, its channel, and the load that uses them."""

    def __init__(self, strategy: RedisStrategy) -> None:
        self.strategy = strategy
        self.cache = cache = SessionCache()
        self.transport = "redis"
        assert strategy.state.redis is not None  # the strategy refuses to start without it
        self.redis_channel = RedisChannel(
            strategy.state.redis, strategy.settings.redis_prefix + CHANNEL, cache.apply,
            on_up=cache.went_up, on_down=cache.went_down)

    def listen(self) -> None:
        """Make sure this process listens (its first request, or the first after a fork)."""
        self.redis_channel.listen()

    def close(self) -> None:
        """Stop this process's listener; the cache is not used until it listens again."""
        self.redis_channel.close()
        self.cache.went_down()

    # -- invalidation ----------------------------------------------------------------

    def execute(self, pipe: Any, session_ids: list[str], user_id: int | None = None) -> list[Any]:
        """Run the strategy's pipeline ``pipe`` (a write to the named sessions, or with
        ``user_id`` to every session of that user) with the messages that announce it
        appended, then forget those sessions here too; the results of ``pipe``'s own
        commands. Forgetting after the write (not before) leaves no window in which this
        process could keep what a request read just before it."""
        payloads = messages(session_ids, user_id)
        for payload in payloads:
            pipe.publish(self.redis_channel.name, payload)
        results: list[Any] = pipe.execute()
        self.cache.evict(session_ids, user_id)
        return results[:len(results) - len(payloads)]

    # -- the hot path ----------------------------------------------------------------

    def make_load(self) -> Callable[[str, Request], Loaded | Ended | None]:
        """The strategy's ``load`` with the cache (the database strategy's own,
        :func:`~flask_guardian.strategies.cached_sessions.cached_load`)."""
        return cached_load(self)

    def load_through(self, token: str, request: Request) -> Loaded | Ended | None:
        """The ``GET`` (as without the cache), keeping the result when the channel is up:
        the first request of a session, one whose deadline or refresh is due, and every
        request while the channel is down."""
        cache, strategy = self.cache, self.strategy
        if not cache.live:
            self.listen()
            return type(strategy).load(strategy, token, request)
        if token in cache.entries:
            cache.drop(token)  # its deadline or refresh is due: the record decides
        if _TOKEN_RE.fullmatch(token) is None:
            return None
        generation = cache.generation  # before the read: see session_cache.py
        kept = strategy._kept
        try:
            client = getattr(kept.local, "client", None) or kept.client()
            raw = client.get(strategy._session_prefix + sha256_hex(token))
        except strategy._errors as exc:
            raise down(exc) from exc
        if raw is None:
            return EXPIRED
        record = strategy._record(raw)
        if record is None:
            return REVOKED if raw == GONE else None
        now = time.time()
        if record.expires <= now:
            return EXPIRED
        if now >= record.refresh_at:
            refreshed = strategy._refresh(token, raw, record, now)
            if not isinstance(refreshed, Record):
                return refreshed  # revoked, expired or gone meanwhile
            record = refreshed
        loaded = record.loaded
        until = min(record.expires, record.refresh_at)
        session = loaded.session
        cache.put(token, generation, Entry(loaded, until, record.ip, record.agent,
                                           session.id, session.user.id))
        agent_changed = request.environ.get("HTTP_USER_AGENT") != record.agent and (
            client_agent(request) != record.agent
        )
        if (agent_changed or strategy.settings.monitor_ip_network) and not (
            strategy.check_client(session, request, agent_changed, ip_network(record.ip))
        ):
            return None
        return loaded
