"""Signing in a user the application authenticated by other means (registration, OAuth,
a magic link, SSO): :func:`sign_in_user`, Flask-Login's ``login_user``. The session is
started exactly as a password sign-in starts one (``auth.begin_session``)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, has_request_context
from sqlalchemy import inspect

from . import signals
from .auth import SignInResult, _bounded, _client_ip, begin_session, forget_started
from .redirects import safe_redirect
from .state import AppState, get_state
from .storage import is_storage_error, rollback_quietly, unavailable


@_bounded
def sign_in_user(user: Any, *, redirect_url: object = None, remember: bool = False
                 ) -> SignInResult:
    """Start a session for ``user``, whom the application authenticated by other means
    (registration, OAuth, a magic link, SSO): the same rotation, cookie, device-list row
    and signals as a password sign-in (``user_signed_in`` with ``method="external"``).
    An inactive user is refused (``.error == "inactive"``). A user added to ``db.session``
    but not yet flushed is flushed first. Flask-Login's ``login_user``."""
    if not isinstance(remember, bool):
        raise TypeError("remember must be True or False")
    state = get_state()
    target = safe_redirect(redirect_url, state.settings.default_redirect)
    carried = g.get("session") if has_request_context() else None
    try:
        user = _signable(state, user)
        if not user.is_active:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            signals.sign_in_failed.send(app, email=user.email, reason="inactive",
                                        ip=_client_ip())
            return SignInResult(False, "inactive", None, target)
        # A user with two-factor authentication gives a code too (second_factor.py): the
        # app's login view sends the browser to the code step (docs/two-factor-signin.md).
        step = state.second_step(state, user, remember=remember, redirect_url=target,
                                 method="external") if state.second_step else "none"
        if step == "pending":
            state.db.session.commit()
            return SignInResult(False, "two_factor_required", None, target)
        session = begin_session(state, user, "external", remember=remember,
                                two_factor=step == "trusted")
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        rollback_quietly(state.db)
        forget_started(carried)
        raise unavailable(exc, "sign-in") from exc
    return SignInResult(True, None, session, target)


def _signable(state: AppState, user: Any) -> Any:
    """``user`` as an object of the current ``db.session`` with an id, or TypeError /
    ValueError / LookupError for a programming mistake (never a half-started session)."""
    user_model = state.models.user
    if not isinstance(user, user_model):
        raise TypeError(f"sign_in_user() expects a {user_model.__name__}, got {user!r}")
    status = inspect(user)
    if status.transient:
        raise ValueError("sign_in_user(): add the user to db.session first")
    db_session = state.db.session
    if status.detached:  # loaded in another session: use this request's copy
        # By its identity key: a detached object's attributes may be expired (unreadable).
        fresh = db_session.get(user_model, status.identity)
        if fresh is None:
            raise LookupError(f"user {status.identity} no longer exists")
        return fresh
    if status.pending:
        db_session.flush()  # the id and uniquifier the session records
    return user
