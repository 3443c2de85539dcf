"""The one redis-py client of an app, built from ``GUARDIAN_REDIS_URL``, and shared by
everything that uses Redis: the redis strategy's sessions, the jwt strategy's revocation
channel and the lockout counters.

redis-py keeps one connection pool per client and opens new connections in a forked
child, so one client per app is one pool per process, and a pre-forking server is safe.

The redis strategy's one command per request goes through :class:`KeptClients` instead: a
client per thread on a connection it keeps, as the benchmark's raw ``GET`` floor does.
Taking a connection from the pool and giving it back costs more than the ``GET`` itself
in Python (75 calls of redis-py's against 101 for the command).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import Settings


class RedisConnection(NamedTuple):
    """A redis-py client and the exceptions that mean "Redis could not be used"."""

    client: Any
    errors: tuple[type[BaseException], ...]


def connect(settings: Settings) -> RedisConnection | None:
    """The client for ``GUARDIAN_REDIS_URL`` (None when it is not set). Every command is
    bounded by ``GUARDIAN_REDIS_TIMEOUT`` and retried once at once, never with redis-py's
    growing back-off: a failing Redis is a 503 within the timeout. No connection is made
    here; the first command makes it."""
    if not settings.redis_url:
        return None
    try:
        import redis
    except ImportError:  # pragma: no cover - the extra is not installed
        raise ConfigurationError(
            "GUARDIAN_REDIS_URL",
            "Redis needs redis-py: pip install 'flask-guardian-sessions[redis]'",
        ) from None
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_timeout,
            socket_timeout=settings.redis_timeout,
            health_check_interval=30,
            # One immediate retry (a connection the server dropped, a restart).
            retry=Retry(NoBackoff(), 1),
        )
    except (ValueError, TypeError) as exc:  # a port or an option redis-py cannot read
        raise ConfigurationError(
            "GUARDIAN_REDIS_URL", f"redis-py cannot read this URL: {exc}"
        ) from None
    return RedisConnection(client, (redis.RedisError, OSError))


class KeptClients:
    """One redis-py client per thread, each keeping one connection of ``client``'s pool
    (same URL, timeouts and retry) from request to request. A forked child forgets its
    parent's (their sockets are the parent's) and opens its own on first use; a client
    goes back to the pool with its thread."""

    def __init__(self, client: Any) -> None:
        self._pool = client.connection_pool
        self._retry = client.get_retry()
        self.local = threading.local()
        forget = weakref.WeakMethod(self._forget)
        os.register_at_fork(after_in_child=lambda: (f := forget()) is not None and f())

    def _forget(self) -> None:
        self.local = threading.local()

    def client(self) -> Any:
        """This thread's client, made on first use. (The hot path reads
        ``self.local.client`` itself and calls this only when there is none.)"""
        import redis

        kept = redis.Redis(connection_pool=self._pool, single_connection_client=True,
                           retry=self._retry)
        self.local.client = kept
        return kept
