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
from collections.abc import Callable
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


def translate(where: str, db_of: Callable[[], Any]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function that uses the database: an outage raised inside it becomes
    :class:`StorageUnavailable` (after rolling ``db_of()``'s session back); anything
    else passes through unchanged."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except StorageUnavailable:
                raise
            except Exception as exc:
                if not is_storage_error(exc):
                    raise
                rollback_quietly(db_of())
                raise unavailable(exc, where) from exc

        return wrapper

    return decorate


def bound_connect(engine: Any, connect_timeout: float | None) -> None:
    """Give every new connection of ``engine`` a connect timeout unless the app set its
    own: a database that accepts no connection then costs a request ``connect_timeout``
    seconds, not the operating system's minutes. (Server dialects only.)"""
    from sqlalchemy import event

    if connect_timeout is None or engine.dialect.name not in ("postgresql", "mysql", "mariadb"):
        return
    if getattr(engine, "_guardian_connect_bounded", False):
        return
    engine._guardian_connect_bounded = True
    # psycopg takes whole seconds (libpq, minimum 2); PyMySQL any positive number.
    value: float = max(2, round(connect_timeout)) if engine.dialect.name == "postgresql" else (
        connect_timeout
    )

    @event.listens_for(engine, "do_connect")
    def _connect_timeout(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
        cparams.setdefault("connect_timeout", value)
