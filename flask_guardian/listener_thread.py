"""The thread a process listens with: one per listener and process, for PostgreSQL
``LISTEN`` (:mod:`.pg_listen`) and Redis pub/sub (:mod:`.redis_channel`).

It is started on first use, and again in a forked child (which has none of its parent's
threads). It holds its listener weakly, so an app that goes away takes its thread with it.
Whatever goes wrong while it listens, a lost connection or a bug, it never dies silently:
the listener is told it went down (its user, the session cache, stops trusting what it
kept), the error is logged, and after a pause it connects again. A cache trusted by a
thread that is gone would serve a session revoked after that from memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .storage import unavailable

logger = logging.getLogger("flask_guardian")


class Listening(Protocol):
    """What the thread uses of a listener."""

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Errors that mean the connection is gone (logged in one rate-limited line; any
        other error is logged with its traceback, as a bug)."""

    def _connect(self) -> Any:
        """A new connection that listens (it has a ``close()``)."""

    def _receive(self, conn: Any) -> None:
        """Wait a short tick on ``conn`` and hand over what came; raise once it is gone."""

    def _went_down(self) -> None:
        """The connection dropped, or the thread ends: nothing is heard until the next
        :meth:`_connect`."""

    def _describe(self) -> str:
        """What is listened to, for the log."""


class ListenerThread:
    """Starts and stops the listening thread of ``listener`` in this process."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        self._pid = 0
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        #: This process's thread, once started (a stopped one stays here until replaced).
        self.current: threading.Thread | None = None

    def start(self, listener: Listening, before: Callable[[], None] | None = None) -> None:
        """Make sure this process has the thread: cheap after the first call, and a forked
        child starts its own. ``before()`` runs under the lock, ahead of the thread."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._start_lock:
            if self._pid == pid:
                return
            if before is not None:
                before()
            self._pid = pid
            self._stop = stop = threading.Event()
            self.current = threading.Thread(
                target=_listen, args=(weakref.ref(listener), self, stop),
                name=self.name, daemon=True,
            )
            self.current.start()

    def stop(self) -> None:
        """Ask this process's thread to end (after its current tick)."""
        self._stop.set()
        self._pid = 0


def _listen(ref: weakref.ref[Listening], thread: ListenerThread, stop: threading.Event) -> None:
    conn: Any = None
    while not stop.is_set():
        listener = ref()
        if listener is None:
            break
        try:
            if conn is None:
                conn = listener._connect()
            listener._receive(conn)
        except Exception as exc:
            # A bug must not leave a cache trusted without its listener either.
            _went_down(listener)
            if isinstance(exc, listener.errors):
                unavailable(exc, listener._describe())  # logged, rate-limited
            else:
                logger.exception("flask-guardian: %s failed", listener._describe())
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
            del listener
            stop.wait(thread.retry_after)
        finally:
            listener = None
    listener = ref()
    if listener is not None and thread._stop is stop:
        # Stopped, and no newer thread started since (that one's state is not ours).
        _went_down(listener)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def _went_down(listener: Listening) -> None:
    try:
        listener._went_down()
    except Exception:  # logged; the thread goes on (and connects again)
        logger.exception("flask-guardian: %s: going down failed", listener._describe())
