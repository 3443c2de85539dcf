"""Users: creating them (with the checks a new account passes) and changing their
password or role through the ORM, so the user-change policy (``user_changes.py``) reaches
their sessions; the current session is rotated on a privilege change."""

from __future__ import annotations

import unicodedata
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import current_app, g, has_request_context
from sqlalchemy import inspect, select
from sqlalchemy.orm.attributes import set_committed_value

from . import signals
from .auth import start_session
from .models import EMAIL_MAX_LENGTH, normalize_email
from .session import Session
from .state import AppState


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def _check_password_policy(state: AppState, password: object) -> str:
    settings = state.settings
    if not isinstance(password, str):
        raise TypeError("password must be a string")
    if len(password) < settings.password_min_length:
        raise ValueError(f"password must have at least {settings.password_min_length} characters")
    if state.hasher.too_long(password):
        raise ValueError(f"password must be at most {settings.password_max_length} bytes")
    return password


def _check_email(email: object) -> str:
    """The normalised form of a new account's email, or ValueError. The structure is
    checked by ``email-validator`` (as WTForms and Flask-Security-Too do; no DNS lookup),
    which also refuses invisible and direction-changing characters (Unicode category Cf:
    ``evil\u200b@example.com`` would be a look-alike of ``evil@example.com``)."""
    if not isinstance(email, str):
        raise TypeError("email must be a string")
    normalized = normalize_email(email)
    if len(normalized) > EMAIL_MAX_LENGTH or any(
        unicodedata.category(c) in ("Cc", "Cf") for c in normalized
    ):
        raise ValueError(f"not a usable email address: {email!r}")
    try:
        validate_email(normalized, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a usable email address: {email!r}: {exc}") from None
    return normalized


def _check_name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > 200 or not name.isprintable():
        raise ValueError("name must be printable text of at most 200 characters")
    return name


def _check_role(role: object) -> str:
    if not isinstance(role, str) or not role or len(role) > 64 or not role.isprintable():
        raise ValueError("role must be a non-empty string of at most 64 characters")
    return role


#: Columns flask-guardian keeps itself: ``create_user`` sets them, never the caller.
MANAGED = frozenset({"id", "email", "password_hash", "is_active", "session_version",
                     "uniquifier", "created_at", "name", "role"})


def create_user(
    state: AppState, email: object, password: object, *, name: str | None = None,
    role: str = "user", **columns: Any,
) -> Any:
    normalized = _check_email(email)
    _check_role(role)
    _check_name(name)
    user_model = state.models.user
    _check_columns(user_model, columns)
    db_session = state.db.session
    if db_session.execute(
        select(user_model.id).where(user_model.email == normalized)
    ).first() is not None:
        raise ValueError(f"a user with the email {normalized!r} exists")
    profile = _profile(user_model, name, role)
    user = user_model(
        **columns,
        email=normalized,
        **profile,
        password_hash=state.hasher.hash(_check_password_policy(state, password)),
        is_active=True,
        session_version=0,
    )
    db_session.add(user)
    db_session.commit()
    return user


def _rotate_if_current(state: AppState, user: Any, reason: str) -> None:
    """Give the current request a new session id and token when its session is
    ``user``'s (privilege change: OWASP session management, renew the id)."""
    current: Session | None = g.get("session") if has_request_context() else None
    if current is None or current.user.id != user.id:
        return
    state.strategy.revoke([current.id], user.id)
    start_session(state, user, auth_time=current.auth_time, remember=current.remember,
                  two_factor=current.two_factor)
    state.db.session.commit()
    signals.session_revoked.send(_app(), session_ids=[current.id], user_id=user.id,
                                 reason=reason)


def attached(state: AppState, user: Any) -> Any:
    """``user`` as an object of the application's current ``db.session``. A user loaded in
    another (closed) app context or session is detached: a change made to it would be
    dropped without a word, leaving the old password or role live. It is loaded again
    here; one that no longer exists is refused loudly."""
    db_session = state.db.session
    if user in db_session:
        return user
    user_model = state.models.user
    if not isinstance(user, user_model) or getattr(user, "id", None) is None:
        raise TypeError(f"expected a saved {user_model.__name__}, got {user!r}")
    fresh = db_session.get(user_model, user.id)
    if fresh is None:
        raise LookupError(f"user {user.id} no longer exists")
    return fresh


def _change_user(state: AppState, user: Any, column: str, value: Any) -> None:
    """Set one watched column and commit (the ORM flush applies the change policy), on the
    attached user; the caller's own object shows the new value too."""
    target = attached(state, user)
    setattr(target, column, value)
    state.db.session.commit()
    if target is not user:
        set_committed_value(user, column, value)
    _rotate_if_current(state, target, "rotated")


def set_password(state: AppState, user: Any, password: object) -> None:
    # The flush event ends the user's other sessions.
    _change_user(state, user, "password_hash",
                 state.hasher.hash(_check_password_policy(state, password)))


def set_role(state: AppState, user: Any, role: object) -> None:
    # The flush event bumps session_version.
    if "role" not in state.models.user.__table__.c:
        raise ValueError(f"{state.models.user.__name__} has no role column to change")
    _change_user(state, user, "role", _check_role(role))


def _check_columns(user_model: Any, columns: dict[str, Any]) -> None:
    """The application's own columns of a new user (``username="ann"``): each must be a
    mapped attribute of the model and none of the columns flask-guardian keeps."""
    mapped = set(inspect(user_model).column_attrs.keys())
    for key in columns:
        if key in MANAGED:
            raise TypeError(f"create_user sets {key!r} itself")
        if key not in mapped:
            raise TypeError(f"{user_model.__name__} has no column attribute {key!r}")


def _profile(user_model: Any, name: str | None, role: str) -> dict[str, Any]:
    """The ``name`` and ``role`` to store, for a model that has those columns (a model
    may keep no names, ``name = None``, or give everyone one role, ``role = "user"``)."""
    columns = user_model.__table__.c
    profile: dict[str, Any] = {}
    if "name" in columns:
        profile["name"] = name
    elif name is not None:
        raise ValueError(f"{user_model.__name__} has no name column")
    if "role" in columns:
        profile["role"] = role
    elif role not in ("user", user_model.role):  # "user": the default argument
        raise ValueError(f"{user_model.__name__} has no role column: every user is "
                         f"{user_model.role!r}")
    return profile
