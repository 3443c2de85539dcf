"""Per-app state, at the bottom of the package: what flask-guardian keeps for one app, and
:func:`get_state` to find it. This module imports nothing of the package at run time, so
every other module may import it and none imports back up.

The state lives behind the one ``app.extensions["guardian"]`` entry (the
:class:`~flask_guardian.Guardian` instance, which keeps one state per app it serves), as
Flask-SQLAlchemy keeps all of its per-app state behind ``app.extensions["sqlalchemy"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from .api_tokens import ApiTokens
    from .config import Settings
    from .credentials import PasswordHasher
    from .csrf import CSRFProtect
    from .models import Models
    from .redis_client import RedisConnection
    from .strategies.base import SessionStrategy
    from .throttle import LoginThrottle


@dataclass(slots=True)
class AppState:
    """Everything flask-guardian keeps for one app: its validated settings, the
    application's ``db`` and the models, and the parts built from them."""

    #: The :class:`~flask_guardian.Guardian` instance (for the CLI's management calls).
    guardian: Any
    settings: Settings
    db: Any
    models: Models
    hasher: PasswordHasher
    throttle: LoginThrottle
    csrf: CSRFProtect
    strategy: SessionStrategy = None  # type: ignore[assignment]
    #: The app's Redis client (``GUARDIAN_REDIS_URL``), or None.
    redis: RedisConnection | None = None
    #: Called after a correct password, before a session starts: the sign-in code step
    #: (``second_factor.after_password``), kept here so ``auth`` need not import it.
    second_step: Callable[..., str] | None = None
    #: The API tokens (``api_tokens.ApiTokens``: access tokens, refresh store).
    api_tokens: ApiTokens = None  # type: ignore[assignment]


def get_state(app: Flask | None = None) -> AppState:
    """The :class:`AppState` of ``app`` (default: the current app)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    guardian = app.extensions.get("guardian")
    if guardian is None:
        raise RuntimeError("flask-guardian is not initialised on this app")
    state: AppState = guardian.state_for(app)
    return state
