"""Listening to an app's SQLAlchemy session without keeping the listener alive.

SQLAlchemy keeps its listeners for as long as the session class lives, and an app's
``db.session`` class lives as long as ``db``: a ``db = SQLAlchemy()`` at module level, shared
by every app an application factory makes, outlives them all. A bound method handed to
:func:`sqlalchemy.event.listen` would keep its object (a strategy, with its Redis
connection pool) alive with it: one more pool, and open sockets, per app ever made.
:func:`listen_weakly` holds the object weakly and takes the listener off once the object
is gone.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any


def listen_weakly(target: Any, name: str, method: Callable[..., None]) -> None:
    """``event.listen(target, name, method)`` for a bound ``method``, holding its object
    weakly: the listener does nothing once the object is gone, and is removed then."""
    from sqlalchemy import event

    ref = weakref.WeakMethod(method)

    def listener(*args: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args)

    event.listen(target, name, listener)
    weakref.finalize(method.__self__, _remove, target, name, listener)  # type: ignore[attr-defined]


def _remove(target: Any, name: str, listener: Callable[..., None]) -> None:
    # Run by the garbage collector: never let its failure escape.
    with contextlib.suppress(Exception):
        from sqlalchemy import event

        event.remove(target, name, listener)
