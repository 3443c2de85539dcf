"""``GUARDIAN_SESSION_CACHE``: the in-process session cache of the database and redis
strategies.

A steady-state request of a known session makes no round trip: the session is kept in this
process, keyed by its cookie token (as the jwt strategy keeps its verified tokens), until
the earlier of its deadline and its next refresh. Every process learns of a change made by
another through an invalidation channel, and trusts its cache only while that channel is
up:

- PostgreSQL: ``LISTEN/NOTIFY`` (``pg_listen.py``). The ``NOTIFY`` is part of the revoking
  transaction, so it is delivered exactly when (and only if) the revocation commits.
- Any other database with ``GUARDIAN_REDIS_URL``: Redis pub/sub (``redis_channel.py``),
  published once the revoking transaction has committed.
- The redis strategy: Redis pub/sub, published in the same transaction (``MULTI``) as the
  write that ends or alters the sessions (``strategies/cached_redis.py``).

The channel drop rule: while this process's listener is not connected (or has not yet
confirmed that it listens), the cache is empty and not filled, so every request makes its
round trip as without the cache; when the listener comes back, the cache is emptied before
it is used again. What a process may have missed while it was cut off is therefore never
served from memory.

Filling the cache races with invalidation: a request that read a row just before a
revocation committed must not put it in the cache after the message was applied. Every
invalidation moves :attr:`SessionCache.generation` on; an entry is stored only when the
generation is still the one the request saw before its read.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy.engine import make_url

from .config_values import read_bool
from .errors import ConfigurationError

KEY = "GUARDIAN_SESSION_CACHE"
#: The key's default (``config.DEFAULTS`` takes it from here): off, because a cache needs
#: an invalidation channel the deployment must provide (PostgreSQL or Redis).
CACHE_DEFAULTS: dict[str, Any] = {KEY: False}
#: At most this many sessions are kept per process (then the cache starts again empty).
CACHE_MAX = 16384
#: Session ids per invalidation message (PostgreSQL's NOTIFY payload is under 8000 bytes).
IDS_PER_MESSAGE = 200


def read_session_cache(values: Mapping[str, Any], strategy_class: type,
                       redis_url: str | None) -> str | None:
    """``GUARDIAN_SESSION_CACHE``: None when off, else the invalidation channel,
    ``"postgresql"`` (LISTEN/NOTIFY: transactional, preferred whenever the database is
    PostgreSQL) or ``"redis"`` (pub/sub; always for a strategy whose sessions are in Redis
    already, which names it as its ``session_cache_channel``). Refused where it cannot be
    kept correct: a strategy without a cache (jwt verifies its tokens in memory already),
    or no channel (a database other than PostgreSQL and no ``GUARDIAN_REDIS_URL``)."""
    enabled = read_bool(values, KEY)
    if not enabled:
        return None
    if not getattr(strategy_class, "supports_session_cache", False):
        raise ConfigurationError(
            KEY, f"the {getattr(strategy_class, 'name', strategy_class)!r} strategy cannot "
            "use the session cache; it is for the 'database' and 'redis' strategies"
        )
    own = getattr(strategy_class, "session_cache_channel", None)
    if own is not None:
        return str(own)
    uri = values.get("SQLALCHEMY_DATABASE_URI")
    try:
        backend = make_url(uri).get_backend_name() if uri else ""
    except Exception:  # Flask-SQLAlchemy reports an unreadable URI itself
        backend = ""
    if backend == "postgresql":
        return "postgresql"
    if redis_url:
        return "redis"
    raise ConfigurationError(
        KEY, "needs an invalidation channel between processes: PostgreSQL "
        f"(LISTEN/NOTIFY) or GUARDIAN_REDIS_URL (pub/sub); this app has {backend or 'no'} "
        "database and no GUARDIAN_REDIS_URL"
    )


class Entry(NamedTuple):
    """A cached session: what ``load`` returns, until when it may be served from memory
    (the earlier of its deadline and its next refresh, epoch seconds), and the address and
    User-Agent it was signed in with (the client checks still run on every request)."""

    loaded: Any
    until: float
    ip: str | None
    signed_agent: str | None
    session_id: str
    user_id: int


class SessionCache:
    """The cached sessions of one strategy in one process, and their invalidation."""

    def __init__(self) -> None:
        #: token -> :class:`Entry`. Read without a lock on the hot path; changed under it.
        self.entries: dict[str, Entry] = {}
        self._by_session: dict[str, str] = {}
        self._by_user: dict[int, set[str]] = {}
        #: Moves on at every invalidation (see the module's docstring).
        self.generation = 0
        #: Whether the channel is up and this process listens (entries are served only then).
        self.live = False
        self._lock = threading.Lock()
        #: Invalidation messages applied, and times the channel came up (tests wait on them).
        self.heard = 0
        self.came_up = 0
        self._changed = threading.Condition(self._lock)
        # A forked child has no listener thread of its parent's: it starts empty and down.
        os.register_at_fork(after_in_child=functools.partial(_forked, weakref.ref(self)))

    # -- filling ---------------------------------------------------------------------

    def put(self, token: str, generation: int, entry: Entry) -> None:
        """Keep ``entry`` for ``token``, unless the channel is down or an invalidation came
        since the caller read ``generation`` (before its read of the row)."""
        with self._lock:
            if not self.live or self.generation != generation:
                return
            if len(self.entries) >= CACHE_MAX:
                self._clear()
            old = self.entries.get(token)
            if old is not None:
                self._unindex(token, old)
            self.entries[token] = entry
            self._by_session[entry.session_id] = token
            self._by_user.setdefault(entry.user_id, set()).add(token)

    def drop(self, token: str) -> None:
        """Forget one token (its deadline or refresh is due: the next use reads the row)."""
        with self._lock:
            entry = self.entries.pop(token, None)
            if entry is not None:
                self._unindex(token, entry)

    # -- invalidating ----------------------------------------------------------------

    def evict(self, session_ids: list[str] | tuple[str, ...] = (),
              user_id: int | None = None) -> None:
        """Forget the named sessions and, with ``user_id``, every session of that user."""
        with self._lock:
            self.generation += 1
            for sid in session_ids:
                token = self._by_session.get(sid)
                if token is not None:
                    self._unindex(token, self.entries.pop(token))
            if user_id is not None:
                for token in list(self._by_user.get(user_id, ())):
                    self._unindex(token, self.entries.pop(token))

    def apply(self, payload: bytes | str) -> None:
        """Apply a message of the channel (:func:`message`); anything else empties the
        cache, which is always safe."""
        try:
            data = json.loads(payload)
            sessions = data.get("s", [])
            user = data.get("u")
            if not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions):
                raise ValueError
            if user is not None and type(user) is not int:
                raise ValueError
        except (ValueError, AttributeError, TypeError):
            with self._lock:
                self._clear()
        else:
            self.evict(sessions, user)
        with self._changed:
            self.heard += 1
            self._changed.notify_all()

    def went_up(self) -> None:
        """The listener listens (again): start from an empty cache, then serve from it."""
        with self._changed:
            self._clear()
            self.live = True
            self.came_up += 1
            self._changed.notify_all()

    def went_down(self) -> None:
        """The listener lost its connection (or this is a fresh fork): empty, not served."""
        with self._lock:
            self.live = False
            self._clear()

    def wait(self, *, heard: int = 0, came_up: int = 0, timeout: float = 5.0) -> bool:
        """Wait until ``heard`` messages were applied and the channel came up ``came_up``
        times in all; False after ``timeout`` seconds (tests and health checks)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.heard >= heard and self.came_up >= came_up and (
                    self.live or not came_up), timeout)

    def _clear(self) -> None:
        self.generation += 1
        self.entries.clear()
        self._by_session.clear()
        self._by_user.clear()

    def _unindex(self, token: str, entry: Entry) -> None:
        if self._by_session.get(entry.session_id) == token:
            del self._by_session[entry.session_id]
        tokens = self._by_user.get(entry.user_id)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._by_user[entry.user_id]


def _forked(ref: weakref.ref[SessionCache]) -> None:
    cache = ref()
    if cache is not None:
        cache.went_down()


def messages(session_ids: list[str], user_id: int | None) -> list[str]:
    """The channel payloads that evict ``session_ids`` (in chunks that fit a NOTIFY) and,
    with ``user_id``, all of that user's cached sessions (a role or name change)."""
    if not session_ids:
        return [json.dumps({"u": user_id})] if user_id is not None else []
    out = []
    for start in range(0, len(session_ids), IDS_PER_MESSAGE):
        body: dict[str, Any] = {"s": session_ids[start:start + IDS_PER_MESSAGE]}
        if user_id is not None:
            body["u"] = user_id
        out.append(json.dumps(body))
    return out
