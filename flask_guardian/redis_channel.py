"""A Redis pub/sub channel one process listens to: a daemon thread with a connection of
its own, started on first use (and again in a forked child, which has no thread of its
parent's), that hands each message to a callback.

Pub/sub delivers a message only to the connections subscribed when it is published: a
message sent while a listener was cut off is lost for it. A user of this channel therefore
keeps another way to learn what it missed (the jwt strategy keeps its SQL feed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .listener_thread import ListenerThread
from .session_events import listen_weakly
from .storage import unavailable

if TYPE_CHECKING:
    from .redis_client import RedisConnection

logger = logging.getLogger("flask_guardian")

#: Seconds the listener waits for a message before it checks whether it is still wanted.
LISTEN_TICK = 1.0
#: Seconds between two attempts to subscribe again after the connection dropped.
RESUBSCRIBE_AFTER = 1.0


class RedisChannel:
    """Publish to, and listen to, the channel ``name`` of ``redis``'s server."""

    def __init__(self, redis: RedisConnection, name: str,
                 on_message: Callable[[bytes], None], *,
                 on_up: Callable[[], None] | None = None,
                 on_down: Callable[[], None] | None = None) -> None:
        self._client = redis.client
        #: Called when the listener has subscribed (before ``live`` is set) and when its
        #: connection dropped (after ``live`` is cleared): the session cache empties itself.
        self._on_up = on_up
        self._on_down = on_down
        #: The listener's pub/sub object while it is subscribed (tests cut its connection).
        self.pubsub: Any = None
        self.errors = redis.errors
        self.name = name
        self._on_message = on_message
        self._thread = ListenerThread(f"flask-guardian {name}", RESUBSCRIBE_AFTER)
        #: Set while this process's listener is subscribed; cleared when its connection
        #: drops, until it has subscribed again.
        self.live = threading.Event()
        self._counted = threading.Condition()
        #: Messages this process's listener has handed to the callback.
        self.heard = 0
        #: Times this process's listener has subscribed (1 + the times it came back).
        self.subscribed = 0

    def publish(self, payload: str) -> None:
        """Send ``payload`` to every process listening now. Raises redis-py's error
        (or an ``OSError``) when Redis cannot take it."""
        self._client.publish(self.name, payload)

    def listen(self) -> None:
        """Make sure this process has its listener (cheap after the first call; a forked
        child starts its own)."""

        def fresh() -> None:
            self.live = threading.Event()

        self._thread.start(self, before=fresh)

    def close(self) -> None:
        """Stop this process's listener (within :data:`LISTEN_TICK` seconds)."""
        self._thread.stop()

    def wait_heard(self, count: int, timeout: float) -> bool:
        """Wait until the listener has handed over ``count`` messages in all; False when
        ``timeout`` seconds passed first (for tests and health checks)."""
        with self._counted:
            return self._counted.wait_for(lambda: self.heard >= count, timeout)

    def wait_subscribed(self, count: int, timeout: float) -> bool:
        """Wait until the listener has subscribed ``count`` times in all (the first time,
        then once each time it came back after a drop); False after ``timeout`` seconds."""
        with self._counted:
            return self._counted.wait_for(lambda: self.subscribed >= count, timeout)

    def _connect(self) -> Any:
        pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(self.name)
        except BaseException:
            pubsub.close()
            raise
        self.pubsub = pubsub
        return pubsub

    def _receive(self, pubsub: Any) -> None:
        message = pubsub.get_message(timeout=LISTEN_TICK)
        if message is None:
            return
        if message["type"] == "subscribe":
            self._subscribed()
        elif message["type"] == "message":
            self._deliver(message["data"])

    def _went_down(self) -> None:
        self.live.clear()
        self.pubsub = None
        if self._on_down is not None:
            self._on_down()

    def _describe(self) -> str:
        return f"redis channel {self.name}"

    def _subscribed(self) -> None:
        if self._on_up is not None:
            self._on_up()
        self.live.set()
        with self._counted:
            self.subscribed += 1
            self._counted.notify_all()

    def _deliver(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception:  # a bad message must not end the listener
            logger.exception("flask-guardian: message on %s not applied", self.name)
        finally:
            with self._counted:
                self.heard += 1
                self._counted.notify_all()


class AfterCommit:
    """Messages for ``channel`` held on a SQLAlchemy session until its transaction
    commits, then published (dropped on a rollback): a change that did not happen is
    never announced, and a Redis failure cannot fail the application's commit (it is
    logged, rate-limited; the user of the channel keeps another way to catch up).

    ``session`` is what the events listen to (the app's ``db.session``); ``key`` names the
    list in ``session.info`` (one per user of the channel)."""

    def __init__(self, session: Any, channel: RedisChannel, key: str) -> None:
        self._channel = channel
        self._key = key
        listen_weakly(session, "after_commit", self._publish)
        listen_weakly(session, "after_rollback", self._drop)

    def add(self, db_session: Any, payload: str) -> None:
        """Publish ``payload`` once ``db_session``'s transaction commits."""
        db_session.info.setdefault(self._key, []).append(payload)

    def _publish(self, db_session: Any) -> None:
        pending = db_session.info.pop(self._key, None)
        channel = self._channel
        for payload in pending or ():
            try:
                channel.publish(payload)
            except channel.errors as exc:
                unavailable(exc, f"redis channel {channel.name}")
                return

    def _drop(self, db_session: Any) -> None:
        db_session.info.pop(self._key, None)
