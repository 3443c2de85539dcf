"""The database strategy's per-request read, kept to one round trip.

Going through ``db.session`` costs three round trips on a server database (BEGIN, SELECT,
ROLLBACK at teardown) and SQLAlchemy's execution machinery on every request. This reader
compiles the SELECT once and runs it on a per-thread DBAPI connection in autocommit mode:
one statement, no transaction to end, and the latest committed row (a revocation made by
another process is seen at once).

Writes never go through here; they use the application's ``db.session``. In-memory SQLite
(one connection shared by the whole app) has no separate connection to use, so there the
reader falls back to ``db.session``.

Bounded: with a ``timeout``, each connection the reader opens gets a server-side
statement timeout and a client-side read timeout (a stalled network is not a slow
server: only the client can notice it), no retry follows a timed-out read, and after a
failure the reader answers at once, without trying the database, for
:data:`PAUSE_AFTER_FAILURE` seconds, so an outage costs each request a fast error, not a
wait (the storage module turns these errors into a 503).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import SingletonThreadPool, StaticPool
from sqlalchemy.sql import Select

from .storage import bound_engine, deadline_wait, is_timeout

#: Called with each SQL string the reader runs (tests count queries with it).
StatementListener = Callable[[str], None]
#: After a failed read, requests fail at once for this long instead of each waiting on a
#: database that just failed (the first read after it tries again: recovery is automatic).
PAUSE_AFTER_FAILURE = 1.0


class ReaderPaused(ConnectionError):
    """The database failed moments ago; the reader does not try it again yet."""


def as_utc(value: Any) -> datetime:
    """A DBAPI datetime value (SQLite gives ISO strings) as an aware UTC datetime. (Not on
    the steady-state path: the database strategy keeps each row's parsed values.)"""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


class RowReader:
    """Runs one compiled SELECT with named parameters; returns the first row or None."""

    def __init__(self, db: Any, statement: Select[Any], *, timeout: float | None = None,
                 connect_timeout: float | None = None) -> None:
        self._db = db
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._paused_until = 0.0
        self._processors: dict[str, Any] = {}
        self._statement = statement
        self._local = threading.local()
        # Weak: the thread-local holds the only strong reference to each connection.
        self._open: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._engine: Engine | None = None
        self._sql = ""
        self._positions: tuple[str, ...] | None = None
        self._listeners: list[StatementListener] = []
        self._lock = threading.Lock()
        names = list(statement.compile().params)
        #: The parameter's name when the statement has exactly one (for first_value).
        self._only = names[0] if len(names) == 1 else ""
        self._dbapi_error: type[Exception] = Exception

    # -- instrumentation -------------------------------------------------------------

    def listen(self, listener: StatementListener) -> None:
        """Call ``listener(sql)`` for every statement run (like SQLAlchemy's
        ``before_cursor_execute``, which this path bypasses)."""
        self._listeners.append(listener)

    def unlisten(self, listener: StatementListener) -> None:
        self._listeners.remove(listener)

    # -- the read --------------------------------------------------------------------

    def first(self, params: dict[str, Any]) -> Any:
        """The first row for these named parameters, or None."""
        if self._engine is None:  # first use: the reader serves one app, whose engine is fixed
            self._bind(self._db.engine)
        if self._sql == "":
            return self._db.session.execute(self._statement, params).first()
        positions = self._positions
        return self._run(params if positions is None else tuple(params[n] for n in positions))

    def first_value(self, value: Any) -> Any:
        """:meth:`first` for a statement with one parameter, given just its value (the hot
        path: no dictionary to build and take apart)."""
        if not self._only:
            raise TypeError("first_value() needs a statement with exactly one parameter")
        if self._engine is None:
            self._bind(self._db.engine)
        if self._sql == "":
            return self.first({self._only: value})
        return self._run((value,) if self._positions is not None else {self._only: value})

    def all(self, params: dict[str, Any]) -> list[Any]:
        """Every row for these named parameters (converted as SQLAlchemy would bind them:
        this is not the hot path)."""
        if self._engine is None:
            self._bind(self._db.engine)
        if self._sql == "":
            return list(self._db.session.execute(self._statement, params).all())
        params = {n: (p(params[n]) if (p := self._processors.get(n)) else params[n])
                  for n in params}
        positions = self._positions
        return self._run(  # type: ignore[no-any-return]
            params if positions is None else tuple(params[n] for n in positions), True
        )

    def _run(self, args: Any, many: bool = False) -> Any:
        if self._listeners:
            for listener in self._listeners:
                listener(self._sql)
        try:
            cursor = self._connection().cursor()
            cursor.execute(self._sql, args)
            row = cursor.fetchall() if many else cursor.fetchone()
            cursor.close()
        except self._dbapi_error as exc:
            self._discard()
            if is_timeout(exc):  # a stall: a second try would only double the wait
                self._pause()
                raise
            # A dropped connection (server restart, failover): retry once on a new one.
            try:
                cursor = self._connection().cursor()
                cursor.execute(self._sql, args)
                row = cursor.fetchall() if many else cursor.fetchone()
                cursor.close()
            except Exception:
                self._discard()
                self._pause()
                raise
        return row

    def _pause(self) -> None:
        self._paused_until = time.time() + PAUSE_AFTER_FAILURE

    # -- connections -----------------------------------------------------------------

    def _bind(self, engine: Engine) -> None:
        with self._lock:
            if self._engine is engine:
                return  # another thread bound it first
            self.close_all()
            bound_engine(engine, self._connect_timeout)
            if isinstance(engine.pool, (StaticPool, SingletonThreadPool)):
                self._sql = ""  # one shared connection: use the session
            else:
                compiled = self._statement.compile(dialect=engine.dialect)
                self._positions = tuple(compiled.positiontup or ()) if (
                    engine.dialect.positional
                ) else None
                self._sql = compiled.string
                self._dbapi_error = engine.dialect.loaded_dbapi.Error
                self._processors = {
                    name: proc for name, bind in compiled.binds.items()
                    if (proc := bind.type._cached_bind_processor(engine.dialect)) is not None
                }
                event.listen(engine, "engine_disposed", lambda _e: self.close_all())
            self._engine = engine  # last: other threads use the reader once this is set

    def _connection(self) -> Any:
        local = self._local
        held = getattr(local, "held", None)
        # The process id, not an os.register_at_fork hook: a server that forks in C
        # (uWSGI by default) runs no Python fork hooks, and a child must never use its
        # parent's connection. It costs one getpid() system call per request.
        if held is not None and held.pid == os.getpid():
            return held.conn
        assert self._engine is not None
        # time.time(), not monotonic: tests move it with time-machine. The distance check
        # keeps a clock set back from stretching the pause.
        if self._paused_until and 0 < self._paused_until - time.time() <= PAUSE_AFTER_FAILURE:
            raise ReaderPaused("the database failed less than a second ago")
        try:
            proxied = self._engine.raw_connection()
        except Exception:
            self._pause()
            raise
        proxied.detach()  # ours for the thread's life, outside the pool's count
        held = _Held(proxied.dbapi_connection)
        try:
            _autocommit(held.conn, self._engine.dialect.name)
            if self._timeout:
                _bound(held.conn, self._engine.dialect, self._timeout)
        except Exception:
            held.close()
            self._pause()
            raise
        local.held = held
        self._open.add(held)
        return held.conn

    def _discard(self) -> None:
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held.close()

    def close_all(self) -> None:
        """Close every connection the reader opened (on ``engine.dispose()``)."""
        open_now, self._open = list(self._open), weakref.WeakSet()
        for held in open_now:
            held.close()
        self._local = threading.local()


class _Held:
    """A DBAPI connection owned by one thread. The thread-local holds the only strong
    reference: when the thread ends, the connection is closed with it."""

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def close(self) -> None:
        if self.conn is not None and self.pid == os.getpid():  # never a parent's socket
            with contextlib.suppress(Exception):  # broken already: nothing more to do
                self.conn.close()
        self.conn = None

    def __del__(self) -> None:
        self.close()


def _autocommit(conn: Any, dialect: str) -> None:
    if dialect == "sqlite":
        conn.isolation_level = None
    elif dialect in ("mysql", "mariadb"):
        conn.autocommit(True)
    else:
        conn.autocommit = True


def _bound(conn: Any, dialect: Any, timeout: float) -> None:
    """Give the reader's own connection a statement timeout on the server (a slow or
    locked server) and a read timeout on the client (a stalled network, which the server
    never sees). Once per connection: nothing is added to a request."""
    name = dialect.name
    if name == "postgresql":
        cursor = conn.cursor()
        cursor.execute(f"SET statement_timeout = {max(1, int(timeout * 1000))}")
        cursor.close()
        # psycopg 3 has no socket read timeout; its wait() takes a deadline per call, which
        # this connection (and only it) now passes on every query.
        if hasattr(conn, "wait"):
            deadline_wait(conn, lambda: timeout)
    elif name in ("mysql", "mariadb"):
        # PyMySQL applies these to the socket before each read and write.
        if hasattr(conn, "_read_timeout"):
            conn._read_timeout = timeout
            conn._write_timeout = timeout
        cursor = conn.cursor()
        if getattr(dialect, "is_mariadb", False):
            cursor.execute(f"SET SESSION max_statement_time = {timeout:.3f}")
        else:
            cursor.execute(f"SET SESSION max_execution_time = {max(1, int(timeout * 1000))}")
        cursor.close()

