"""A PostgreSQL ``LISTEN`` connection per process: a daemon thread with a psycopg 3
connection of its own, started on first use (and again in a forked child), that hands each
notification of one channel to a callback and says when it is up and when it dropped.

``NOTIFY`` is sent inside the writing transaction (:func:`notify`), so PostgreSQL delivers
it when that transaction commits and never when it rolls back. A notification sent while a
listener was not connected is lost for it: the user of this class (the session cache)
empties what it kept when the listener comes back.

A dropped connection is noticed at once when the server closes it (a restart,
``pg_terminate_backend``); a silent one (a cable, a firewall, a stalled server) by a
``SELECT 1`` after :data:`HEARTBEAT` seconds without a message, which must answer within
:data:`ANSWER_WITHIN` seconds: within 4 seconds in all.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .listener_thread import ListenerThread

#: Seconds the listener waits for a notification before it checks whether it is wanted.
LISTEN_TICK = 0.5
#: Seconds without a notification after which the listener checks its connection.
HEARTBEAT = 2.0
#: Seconds between two attempts to connect again after the connection dropped.
RECONNECT_AFTER = 0.5
#: Seconds the server has to answer the listener's LISTEN and its heartbeat.
ANSWER_WITHIN = 2.0
#: Milliseconds unacknowledged data may wait on the listener's socket (TCP_USER_TIMEOUT).
TCP_USER_TIMEOUT_MS = 3000


def notify(db_session: Any, channel: str, payload: str) -> None:
    """Send ``payload`` on ``channel`` when ``db_session``'s transaction commits."""
    db_session.execute(sa.select(sa.func.pg_notify(channel, payload)))


class PgListener:
    """Listen to ``channel`` on the database of ``url`` (a SQLAlchemy URL)."""

    def __init__(self, channel: str, on_message: Callable[[str], None],
                 on_up: Callable[[], None], on_down: Callable[[], None],
                 connect_timeout: float | None) -> None:
        self.channel = channel
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._connect_timeout = max(1, round(connect_timeout or 3))
        self._thread = ListenerThread(f"flask-guardian LISTEN {channel}", RECONNECT_AFTER)
        self._dsn = ""
        self._checked = 0.0  # when the connection last proved alive (time.monotonic)
        #: The server process id of the listening connection (0 while not connected).
        self.backend_pid = 0

    def listen(self, url: Any) -> None:
        """Make sure this process listens (cheap after the first call; a forked child
        starts its own thread)."""

        def dsn() -> None:
            self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

        self._thread.start(self, before=dsn)

    def close(self) -> None:
        """Stop this process's listener (within :data:`LISTEN_TICK` seconds)."""
        self._thread.stop()

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """A lost connection: psycopg's errors and the operating system's."""
        import psycopg

        return (psycopg.Error, OSError)

    def _connect(self) -> Any:
        """A new connection that listens; every step bounded (a stalled server fails it)."""
        import psycopg

        conn = psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=self._connect_timeout,
            keepalives=1, keepalives_idle=5, keepalives_interval=1, keepalives_count=3,
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        )
        try:
            _run(conn.pgconn, f'LISTEN "{self.channel}"', ANSWER_WITHIN)
            self.backend_pid = conn.info.backend_pid
            self._on_up()  # after LISTEN: nothing from here on is missed
        except BaseException:
            self.backend_pid = 0
            conn.close()
            raise
        self._checked = time.monotonic()
        return conn

    def _receive(self, conn: Any) -> None:
        """Hand over what came within :data:`LISTEN_TICK`; after :data:`HEARTBEAT`
        seconds of silence, check the connection."""
        if _receive(conn.pgconn, self._on_message, LISTEN_TICK):
            self._checked = time.monotonic()
        elif time.monotonic() - self._checked >= HEARTBEAT:
            _run(conn.pgconn, "SELECT 1", ANSWER_WITHIN)
            self._checked = time.monotonic()

    def _went_down(self) -> None:
        self.backend_pid = 0
        self._on_down()

    def _describe(self) -> str:
        return f"LISTEN {self.channel}"


class ListenerLost(ConnectionError):
    """The listening connection is gone, or did not answer in time."""


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` has something to read within ``timeout`` seconds. A selector (epoll,
    kqueue or poll), never ``select()``: a busy process's descriptors pass 1024, which
    ``select()`` refuses."""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _run(pg: Any, sql: str, timeout: float) -> None:
    """Run ``sql`` on libpq connection ``pg`` and wait at most ``timeout`` seconds for its
    end (psycopg's own ``execute`` waits as long as a stalled network lets it)."""
    from psycopg import pq

    pg.send_query(sql.encode())
    if pg.flush():
        raise ListenerLost("could not send to the server")
    deadline = time.monotonic() + timeout
    while True:
        pg.consume_input()
        if not pg.is_busy():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ListenerLost(f"no answer to {sql!r} within {timeout} s")
        _readable(pg.socket, remaining)
    while (result := pg.get_result()) is not None:
        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            raise ListenerLost(f"{sql!r} failed: {result.error_message!r}")


def _receive(pg: Any, on_message: Callable[[str], None], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for notifications and hand each over; whether any
    came. A connection the server closed raises."""
    from psycopg import pq

    if not _readable(pg.socket, timeout):
        return False
    pg.consume_input()  # raises once the connection is gone
    if pg.status != pq.ConnStatus.OK:
        raise ListenerLost("the listening connection is closed")
    came = False
    while (note := pg.notifies()) is not None:
        on_message(note.extra.decode())
        came = True
    return came
