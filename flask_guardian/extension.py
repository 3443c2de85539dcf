"""The :class:`Guardian` extension object: wiring only. It validates configuration, builds
the per-app state and registers the request hooks, blueprint, error handlers, Jinja globals,
ORM events and CLI. The decisions live in the modules it wires together."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from flask import (
    Flask,
    Response,
    current_app,
    g,
    has_app_context,
    has_request_context,
    request,
)
from sqlalchemy import event, inspect

from . import auth, signals
from .config import load_settings
from .cookies import CLEAR, read_cookie
from .credentials import LoginThrottle, PasswordHasher
from .csrf import CSRFProtect
from .errors import AuthError, ConfigurationError, StorageUnavailable
from .models import Models, build_models
from .protection import check_access, match_rule
from .redirects import current_path
from .session import Session
from .state import AppState, get_state
from .storage import is_storage_error, rollback_quietly, unavailable
from .strategies.base import BEARER_MARK, SessionInfo

#: User columns whose change must reach live sessions.
_WATCHED = ("role", "email", "name", "password_hash", "is_active")


class Guardian:
    """The extension: ``Guardian(app, db=db)`` or ``Guardian(db=db).init_app(app)``.

    ``db`` is the application's Flask-SQLAlchemy object; ``user_model`` the application's
    user model (mixing in :class:`flask_guardian.UserMixin`), or None for the ready one.
    One instance may serve several apps; each gets its own validated settings.
    """

    def __init__(self, app: Flask | None = None, *, db: Any = None, user_model: Any = None) -> None:
        self.db = db
        #: The state of each app this instance serves (weak: an app that goes away takes
        #: its state with it).
        self._states: weakref.WeakKeyDictionary[Flask, AppState] = weakref.WeakKeyDictionary()
        self.models: Models | None = build_models(db, user_model) if db is not None else None
        if app is not None:
            self.init_app(app)

    def state_for(self, app: Flask) -> AppState:
        """The state this instance keeps for ``app`` (see :func:`flask_guardian.state.
        get_state`)."""
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError("this Guardian is not initialised on that app") from None

    @property
    def user_model(self) -> Any:
        """The user model class (the application's, or the ready ``User``)."""
        if self.models is None:
            raise RuntimeError("Guardian was created without db")
        return self.models.user

    # -- wiring ----------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Validate ``app.config`` and register everything on ``app``. Fails with
        :class:`ConfigurationError` (naming the key) on an unusable value."""
        if self.db is None or self.models is None:
            raise ConfigurationError(
                "db", "pass the app's Flask-SQLAlchemy object: Guardian(db=db)"
            )
        if "guardian" in app.extensions:
            # A second set of hooks would load every session twice and fight over the
            # cookie: refuse before registering anything.
            raise RuntimeError(
                "flask-guardian is already initialised on this app: call init_app once"
            )
        settings = load_settings(app.config)
        state = AppState(
            guardian=self,
            settings=settings,
            db=self.db,
            models=self.models,
            hasher=PasswordHasher(settings),
            throttle=LoginThrottle(settings, self.models),
            csrf=CSRFProtect(settings),
        )
        state.strategy = settings.strategy_class(state)
        self._states[app] = state
        app.extensions["guardian"] = self

        app.before_request(_make_before_request(state))
        app.after_request(_make_after_request(state))
        app.register_error_handler(AuthError, _handle_auth_error)

        from .views import blueprint

        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)

        @app.context_processor
        def _guardian_context() -> dict[str, Any]:
            session = g.get("session")
            return {"session_user": session.user if session else None,
                    "guardian_session": session}

        app.jinja_env.globals["guardian_csrf_token"] = state.csrf.token
        app.jinja_env.globals["guardian_csrf_field"] = state.csrf.field
        app.jinja_env.globals["guardian_current_path"] = current_path

        from .cli import guardian_cli

        app.cli.add_command(guardian_cli)
        _listen_for_user_changes(self.db, self.models)

    # -- management API (each call commits) -------------------------------------------

    def create_user(
        self, email: str, password: str, *, name: str | None = None, role: str = "user"
    ) -> Any:
        """Create and return a user. Raises ``ValueError`` for an invalid email or
        password, or an email that is taken (compared normalised)."""
        return auth.create_user(get_state(), email, password, name=name, role=role)

    def authenticate(self, email: str, password: str) -> Any | None:
        """The active user with this email and password, or None. Starts no session and
        costs one password hash whatever the outcome."""
        return auth.authenticate(get_state(), email, password)[0]

    def set_password(self, user: Any, password: str) -> None:
        """Change the password: the user's other sessions end, the current one (if it is
        theirs) is rotated."""
        auth.set_password(get_state(), user, password)

    def set_role(self, user: Any, role: str) -> None:
        """Change the role: the current session (if it is theirs) is rotated, the user's
        other sessions see the new role on their next request."""
        auth.set_role(get_state(), user, role)

    def list_sessions(self, user: Any) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
        current = g.get("session")
        state = get_state()
        return state.strategy.list(user.id, current.id if current else None)

    def revoke_session(self, session_id: str) -> bool:
        """End one session by its public id. True if it was live."""
        return auth.revoke(get_state(), [session_id], None, reason="revoked") > 0

    def revoke_user_sessions(self, user: Any, *, except_current: bool = False) -> int:
        """End all the user's sessions (but the current one with ``except_current``);
        returns how many ended."""
        return auth.revoke_user(get_state(), user.id, except_current=except_current)

    def purge_expired(self, *, batch_size: int = 1000) -> int:
        """Delete expired sessions, revocations and lockout counters in batches; returns
        how many rows went."""
        return auth.purge_expired(get_state(), batch_size=batch_size)


# -- request hooks --------------------------------------------------------------------


def _make_before_request(state: AppState) -> Callable[[], None]:
    strategy = state.strategy
    settings = state.settings
    cookie_name = settings.cookie_name
    rules = settings.protected_routes

    def load_session() -> None:
        """The hot path: one token read, one lookup (none for a cached JWT)."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        values = g._get_current_object().__dict__
        values["session"] = None
        # g outlives a request when an app context was pushed around several: never send
        # one request's cookie with another's response.
        values.pop("_guardian_cookie", None)
        values.pop("_guardian_csrf_seed", None)
        if req.endpoint == "static":
            return
        token = strategy.read_token(req)
        if token is not None:
            try:
                loaded = strategy.load(token, req)
            except Exception as exc:
                if isinstance(exc, StorageUnavailable) or is_storage_error(exc):
                    _outage(state, exc, req.endpoint, values)
                raise
            if loaded is not None:
                values["session"] = loaded[0]
                if loaded[1] is not None:
                    values["_guardian_cookie"] = loaded[1]
            elif read_cookie(req.environ, cookie_name) == token:
                values["_guardian_cookie"] = CLEAR  # stop the browser sending a dead credential
        elif read_cookie(req.environ, cookie_name) is not None:
            values["_guardian_cookie"] = CLEAR
        if rules and req.blueprint != "guardian":  # sign-in must stay reachable
            rule = match_rule(rules, req.path)
            if rule is not None:
                check_access(values["session"], rule.roles)

    return load_session


def _outage(state: AppState, exc: Exception, endpoint: str | None,
            values: dict[str, Any]) -> NoReturn:
    """The session could not be loaded because the database is unavailable: answer 503
    (never the driver's exception, never a 500), with nothing decided about the session.
    The cookie stays, so the user is still signed in once the database is back, except on
    sign-out, where the browser forgets it (the 503 says the server could not end it)."""
    rollback_quietly(state.db)  # nothing left for the teardown to roll back
    if endpoint == "guardian.signout":
        values["_guardian_cookie"] = CLEAR
    if isinstance(exc, StorageUnavailable):
        raise exc
    raise unavailable(exc, "session lookup") from exc


def _make_after_request(state: AppState) -> Callable[[Response], Response]:
    settings = state.settings

    def write_cookies(response: Response) -> Response:
        values = g._get_current_object().__dict__
        pending: str | None = values.get("_guardian_cookie")
        seed: str | None = values.get("_guardian_csrf_seed")
        if pending is None and seed is None:
            if values.get("session") is not None:
                # A signed-in page must not be kept by a shared cache or shown again from
                # the browser's cache after sign-out (OWASP Session Management). A view
                # that sets its own Cache-Control keeps it. (No Vary: a response no cache
                # may store needs none.)
                headers = response.headers
                for key, _ in headers:  # a scan, not get(): a miss raises inside
                    if key.lower() == "cache-control":
                        break
                else:
                    headers.add("Cache-Control", "no-store")
            return response
        attrs: dict[str, Any] = {
            "path": settings.cookie_path,
            "domain": settings.cookie_domain,
            "secure": settings.cookie_secure,
            "httponly": True,
            "samesite": settings.cookie_samesite,
        }
        if pending == CLEAR:
            response.delete_cookie(settings.cookie_name, **attrs)
        elif pending is not None and request.environ.get(BEARER_MARK):
            # A bearer client keeps its token itself: a refreshed one goes in a header.
            response.headers["X-Guardian-Token"] = pending
        elif pending is not None:
            session: Session | None = values.get("session")
            expires: datetime | None = None
            if session is not None:
                expires = session.auth_time + timedelta(seconds=settings.max_age)
            response.set_cookie(settings.cookie_name, pending, expires=expires, **attrs)
        if seed is not None:
            response.set_cookie(settings.csrf_cookie_name, seed, **attrs)
        # Responses that carry credentials must not be stored by any cache.
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("Cookie")
        return response

    return write_cookies


def _handle_auth_error(error: AuthError) -> Any:
    from .views import render_error

    return render_error(error)


# -- ORM events -----------------------------------------------------------------------


def _listen_for_user_changes(db: Any, models: Models) -> None:
    """Make a change to a user row reach its sessions however the app makes it (through
    the ORM): role, identity and password changes bump ``session_version``; deactivation
    and deletion end every session; a password change ends all but the current one."""
    if db.__dict__.get("_guardian_listening"):
        return
    db.__dict__["_guardian_listening"] = True
    user_model = models.user

    def before_flush(db_session: Any, flush_context: Any, instances: Any) -> None:
        try:
            state = get_state()
        except RuntimeError:
            return
        current = g.get("session") if has_request_context() else None
        changes: list[tuple[Any, int, str | None, str | None, str]] = []
        for obj in list(db_session.dirty):
            if not isinstance(obj, user_model) or obj.id is None:
                continue
            attrs = inspect(obj).attrs
            changed = {a for a in _WATCHED if attrs[a].history.has_changes()}
            if not changed:
                continue
            obj.session_version = version = (obj.session_version or 0) + 1
            if "is_active" in changed and not obj.is_active:
                changes.append((obj.id, version, "all", None, "deactivated"))
            elif "password_hash" in changed:
                keep = current.id if current is not None and current.user.id == obj.id else None
                changes.append((obj.id, version, "others", keep, "password_changed"))
            else:
                changes.append((obj.id, version, None, None, "user_changed"))
        for obj in list(db_session.deleted):
            if isinstance(obj, user_model) and obj.id is not None:
                changes.append((obj.id, (obj.session_version or 0) + 1, "all", None, "deleted"))
        for user_id, version, end, keep, reason in changes:
            ended = state.strategy.on_user_changed(db_session, user_id, version, end=end,
                                                   keep=keep)
            if ended:
                db_session.info.setdefault("guardian_revoked", []).append(
                    (ended, user_id, reason)
                )

    def after_commit(db_session: Any) -> None:
        revoked = db_session.info.pop("guardian_revoked", None)
        if revoked and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            for ended, user_id, reason in revoked:
                signals.session_revoked.send(app, session_ids=ended, user_id=user_id,
                                             reason=reason)

    def after_rollback(db_session: Any) -> None:
        db_session.info.pop("guardian_revoked", None)

    event.listen(db.session, "after_commit", after_commit)
    event.listen(db.session, "after_rollback", after_rollback)
    event.listen(db.session, "before_flush", before_flush)


