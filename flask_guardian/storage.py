"""Failing cleanly when the database does: what counts as an outage, how it is reported,
and the bounds put on the extension's own connections.

An outage (refused, cut, stalled or timed-out connection) becomes
:class:`~flask_guardian.errors.StorageUnavailable` (503 with ``Retry-After``), never the
driver's own exception and never a 500. A bad query, a constraint violation or any other
programming error is not an outage and is left alone: hiding it behind a 503 would hide
a bug.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from .errors import StorageUnavailable

logger = logging.getLogger("flask_guardian")

P = ParamSpec("P")
R = TypeVar("R")

#: At most one log line per this many seconds per kind of failure: an outage hit by a
#: thousand requests is one event, not a thousand 4 KB tracebacks.
LOG_EVERY = 10.0
_last_logged: dict[str, float] = {}
_log_lock = threading.Lock()


def is_storage_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database could not be used (rather than that a query
    was wrong). SQLAlchemy's wrappers, the DBAPI drivers' own ``OperationalError`` /
    ``InterfaceError`` (the session reader talks to the driver directly), a pool checkout
    timeout, and socket errors all count."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if exc.orig is None:
            return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
        exc = exc.orig
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError, OSError)):
        return True
    # DBAPI (PEP 249) classes by name: the drivers are optional imports. A psycopg wait
    # timeout and a connect timeout subclass its OperationalError.
    return any(c.__name__ in _OUTAGE_CLASSES for c in type(exc).__mro__)


_OUTAGE_CLASSES = frozenset({"OperationalError", "InterfaceError"})


def unavailable(exc: BaseException, where: str) -> StorageUnavailable:
    """A :class:`StorageUnavailable` for ``exc`` (caught ``where``), logged as one line
    with its cause, at most once per :data:`LOG_EVERY` seconds per place."""
    now = time.monotonic()
    with _log_lock:
        due = now - _last_logged.get(where, -LOG_EVERY) >= LOG_EVERY
        if due:
            _last_logged[where] = now
    if due:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        logger.error("storage unavailable in %s: %s: %s (503; repeats are not logged for "
                     "%.0f s)", where, type(exc).__name__, cause[:300], LOG_EVERY)
    error = StorageUnavailable()
    error.__cause__ = exc
    return error


def rollback_quietly(db: Any) -> None:
    """End the failed transaction of ``db.session`` so the request's teardown finds
    nothing to roll back on a dead connection (a rollback that fails there turns a
    finished response into a 500)."""
    try:
        db.session.rollback()
    except Exception:  # the connection is dead: the pool invalidates it
        with contextlib.suppress(Exception):  # nothing more to do with a dead connection
            db.session.close()


def is_timeout(exc: BaseException) -> bool:
    """True for a statement that gave up waiting (psycopg's wait timeout, a socket timeout
    in PyMySQL, the server's statement timeout): the database stalls, it is not gone."""
    text = f"{type(exc).__name__} {exc}".lower()
    return "timeout" in text or "timed out" in text or "canceling statement" in text or (
        "max_statement_time" in text
    )


def translate(
    where: str, state_of: Callable[[], Any]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function that uses the database: its statements on the app's pool are
    bounded (:func:`bounded`), and an outage raised inside it becomes
    :class:`StorageUnavailable` (after rolling the session back); anything else passes
    through unchanged. ``state_of()`` gives the app's ``AppState``."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            state = state_of()
            try:
                with bounded(state.settings.db_statement_timeout):
                    return func(*args, **kwargs)
            except StorageUnavailable:
                raise
            except Exception as exc:
                if not is_storage_error(exc):
                    raise
                rollback_quietly(state.db)
                raise unavailable(exc, where) from exc

        return wrapper

    return decorate


#: Seconds each statement the extension runs on the app's pool may wait for the database
#: (client side), while set; None (the default) leaves the app's own queries untouched.
_limit: ContextVar[float | None] = ContextVar("flask_guardian_statement_limit", default=None)


@contextlib.contextmanager
def bounded(limit: float | None) -> Iterator[None]:
    """Bound the extension's own statements on the app's pool (sign-in, sign-out,
    refresh, device list) by ``limit`` seconds each, on the client: a server-side
    statement timeout cannot notice a stalled network."""
    token = _limit.set(limit)
    try:
        yield
    finally:
        _limit.reset(token)


def bound_engine(engine: Any, connect_timeout: float | None) -> None:
    """Make the app's engine boundable, once: new connections get a connect timeout
    unless the app set its own (a database that accepts nothing costs seconds, not the
    operating system's minutes), and pooled connections honour :func:`bounded`. (Server
    dialects only; outside :func:`bounded` the app's queries are not changed.)"""
    from sqlalchemy import event

    dialect = engine.dialect
    if dialect.name not in ("postgresql", "mysql", "mariadb"):
        return
    if getattr(engine, "_guardian_bounded", False):
        return
    engine._guardian_bounded = True
    if connect_timeout is not None:
        # psycopg takes whole seconds (libpq, minimum 2); PyMySQL any positive number.
        value: float = max(2, round(connect_timeout)) if dialect.name == "postgresql" else (
            connect_timeout
        )

        pymysql = getattr(dialect, "driver", "") == "pymysql"

        @event.listens_for(engine, "do_connect")
        def _connect_timeout(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
            cparams.setdefault("connect_timeout", value)
            if pymysql and "read_timeout" not in cparams:
                # PyMySQL's connect_timeout ends at the TCP connect; the handshake after
                # it reads with read_timeout: bound it too, then give the app back its
                # own (none) once connected (below).
                cparams["read_timeout"] = cparams["write_timeout"] = value
                conn_rec.info["guardian_handshake_bound"] = True

        @event.listens_for(engine, "connect")
        def _handshake_done(dbapi_conn: Any, conn_rec: Any) -> None:
            if conn_rec.info.pop("guardian_handshake_bound", False):
                dbapi_conn._read_timeout = dbapi_conn._write_timeout = None

    driver = getattr(dialect, "driver", "")
    if driver == "psycopg":
        event.listen(engine, "checkout", _psycopg_checkout)
    elif driver == "pymysql":
        event.listen(engine, "checkout", _pymysql_checkout)
        event.listen(engine, "checkin", _pymysql_checkin)


def _psycopg_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    """psycopg 3 has no socket timeout, but its ``wait()`` takes a deadline per
    statement: pass the current :func:`bounded` limit (None outside it: unchanged)."""
    if "wait" not in vars(dbapi_conn) and hasattr(dbapi_conn, "wait"):
        deadline_wait(dbapi_conn, _limit.get)


def deadline_wait(conn: Any, limit: Callable[[], float | None]) -> None:
    """Make the psycopg 3 connection ``conn`` give up a statement after ``limit()``
    seconds (None: no deadline). A connection that gave up is mid-protocol and useless:
    it is closed at once, so SQLAlchemy sees a disconnect and discards it instead of
    trying (and logging a traceback for) a rollback on it."""
    wait = conn.wait

    def limited_wait(gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return wait(gen, interval, limit() if timeout is None else timeout)
        except Exception as exc:
            if type(exc).__name__ == "_WaitTimeout":
                with contextlib.suppress(Exception):
                    conn.close()
            raise

    conn.wait = limited_wait


def _pymysql_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    """PyMySQL reads its socket timeouts from the connection: set them for a checkout
    made inside :func:`bounded`, put the app's back at check-in."""
    limit = _limit.get()
    if limit is None or not hasattr(dbapi_conn, "_read_timeout"):
        return
    record.info["guardian_timeouts"] = (dbapi_conn._read_timeout, dbapi_conn._write_timeout)
    dbapi_conn._read_timeout = dbapi_conn._write_timeout = limit


def _pymysql_checkin(dbapi_conn: Any, record: Any) -> None:
    saved = record.info.pop("guardian_timeouts", None)
    if saved is not None and dbapi_conn is not None:
        dbapi_conn._read_timeout, dbapi_conn._write_timeout = saved
