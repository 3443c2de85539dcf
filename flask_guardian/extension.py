"""The :class:`Guardian` extension object: wiring only. It validates configuration, builds
the per-app state and registers the request hooks, blueprint, error handlers, Jinja globals,
ORM events and CLI. The decisions live in the modules it wires together."""

from __future__ import annotations

import weakref
from typing import Any

from flask import Flask, g

from . import auth, csrf, migrations, users
from .api_tokens import ApiTokens
from .auth import SignInResult
from .config import load_settings
from .credentials import PasswordHasher
from .csrf import CSRFProtect
from .errors import AuthError, ConfigurationError, TooManyAttempts
from .external import sign_in_user
from .identifiers import check_login_fields
from .models import Models, build_models, resolve_user_model
from .redirects import current_path
from .redis_client import connect
from .request_cycle import make_after_request, make_before_request
from .second_factor import after_password
from .state import AppState, get_state
from .storage import bound_engine
from .strategies.base import SessionInfo
from .throttle import make_throttle
from .trusted_browsers import build_trusted_browser_model
from .two_factor_models import build_two_factor_models
from .user_changes import listen_for_user_changes
from .user_proxy import current_user


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
        #: An import string is resolved at init_app (see :func:`resolve_user_model`).
        self._user_model = user_model
        self.models: Models | None = None
        if db is not None and not isinstance(user_model, str):
            self.models = build_models(db, user_model)
            build_two_factor_models(db, self.models.user)
            build_trusted_browser_model(db, self.models.user)
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
            raise RuntimeError(
                "Guardian was created without db, or its user_model import string is "
                "resolved at init_app, which has not run yet"
            )
        return self.models.user

    # -- wiring ----------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Validate ``app.config`` and register everything on ``app``. Fails with
        :class:`ConfigurationError` (naming the key) on an unusable value."""
        if self.db is None:
            raise ConfigurationError(
                "db", "pass the app's Flask-SQLAlchemy object: Guardian(db=db)"
            )
        if self.models is None:
            self.models = build_models(self.db, resolve_user_model(self._user_model))
            build_two_factor_models(self.db, self.models.user)
        if "guardian" in app.extensions:
            # A second set of hooks would load every session twice and fight over the
            # cookie: refuse before registering anything.
            raise RuntimeError(
                "flask-guardian is already initialised on this app: call init_app once"
            )
        settings = load_settings(app.config)
        redis = connect(settings)
        check_login_fields(self.models.user, settings.login_fields)
        state = AppState(
            guardian=self,
            settings=settings,
            db=self.db,
            models=self.models,
            hasher=PasswordHasher(settings),
            throttle=make_throttle(settings, self.models, redis),
            csrf=CSRFProtect(settings),
            redis=redis,
        )
        state.strategy = settings.strategy_class(state)
        # The sign-in code step of two-factor users (second_factor.py) and its table.
        state.second_step = after_password
        build_trusted_browser_model(self.db, self.models.user)
        state.api_tokens = ApiTokens(state, app)
        self._states[app] = state
        app.extensions["guardian"] = self

        app.before_request(make_before_request(state))
        if settings.second_factor.required_roles:  # nothing at all per request otherwise
            from .enrolment_required import make_enrolment_check

            app.before_request(make_enrolment_check(state))
        app.after_request(make_after_request(state))
        app.register_error_handler(AuthError, _handle_auth_error)

        from . import (  # noqa: F401  (their routes join the blueprint)
            reauth_view,
            second_factor_views,
            token_views,
            two_factor_views,
        )
        from .views import blueprint

        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        csrf.defer_flask_wtf(app, blueprint.name)  # Flask-WTF leaves our routes to our check
        migrations.configure_flask_migrate(app)  # generated migrations run as generated

        @app.context_processor
        def _guardian_context() -> dict[str, Any]:
            session = g.get("session")
            return {"session_user": session.user if session else None,
                    "guardian_session": session}

        app.jinja_env.globals["guardian_csrf_token"] = state.csrf.token
        app.jinja_env.globals["guardian_csrf_field"] = state.csrf.field
        app.jinja_env.globals["guardian_current_path"] = current_path
        app.jinja_env.globals["current_user"] = current_user  # a proxy: free until used

        from .cli import guardian_cli

        app.cli.add_command(guardian_cli)
        listen_for_user_changes(self.db)
        if "sqlalchemy" in app.extensions:
            # Bound the app engine's connects now, not at the first session lookup: a
            # fresh worker's first sign-in (or any strategy that never uses the reader)
            # must not wait on a stalled database either. (An app that calls
            # db.init_app later gets it at the first lookup.)
            with app.app_context():
                bound_engine(self.db.engine, settings.db_connect_timeout)

    # -- management API (each call commits) -------------------------------------------

    def create_user(
        self, email: str, password: str, *, name: str | None = None, role: str = "user",
        **columns: Any,
    ) -> Any:
        """Create, commit and return a user. Raises ``ValueError`` for an invalid email or
        password, or an email that is taken (compared normalised). ``columns`` sets the
        application's own columns (``username="ann"``); ``TypeError`` for one the model
        does not map or one flask-guardian keeps itself."""
        return users.create_user(get_state(), email, password, name=name, role=role,
                                 **columns)

    def authenticate(self, identifier: str, password: str) -> Any | None:
        """The active user with this identifier (see ``GUARDIAN_LOGIN_FIELDS``) and
        password, or None; starts no session. The same lockout as the sign-in route (the
        attempt counts per identifier and per address; one password hash whatever the
        outcome): once locked out it raises :class:`~flask_guardian.TooManyAttempts`
        (429, ``too_many_attempts``, with ``retry_after``), even for the right password."""
        checked = auth.check_credentials(get_state(), identifier, password)
        if checked.error == "too_many_attempts":
            raise TooManyAttempts(retry_after=checked.retry_after or 1)
        return checked.user

    def sign_in_user(self, user: Any, *, redirect_url: object = None,
                     remember: bool = False) -> SignInResult:
        """Start a session for a user the application authenticated by other means:
        :func:`flask_guardian.sign_in_user`."""
        return sign_in_user(user, redirect_url=redirect_url, remember=remember)

    def set_password(self, user: Any, password: str) -> None:
        """Change the password: the user's other sessions end, the current one (if it is
        theirs) is rotated."""
        users.set_password(get_state(), user, password)

    def set_role(self, user: Any, role: str) -> None:
        """Change the role: the current session (if it is theirs) is rotated, the user's
        other sessions see the new role on their next request."""
        users.set_role(get_state(), user, role)

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

    #: Decorator for the app's own views: checks flask-guardian's CSRF token on POST, PUT,
    #: PATCH and DELETE (see :func:`flask_guardian.csrf.csrf_protect`).
    csrf_protect = staticmethod(csrf.csrf_protect)

    @staticmethod
    def check_csrf() -> None:
        """Check the current request's flask-guardian CSRF token (form field
        ``csrf_token``, JSON ``csrfToken`` or header ``X-CSRF-Token``) in an app's own
        view; raises :class:`flask_guardian.CSRFError` (403) when it is missing or wrong."""
        csrf.check_csrf()

    def purge_expired(self, *, batch_size: int = 1000) -> int:
        """Delete expired sessions, revocations, lockout counters and trusted browsers in
        batches; returns how many rows went."""
        return auth.purge_expired(get_state(), batch_size=batch_size)


def _handle_auth_error(error: AuthError) -> Any:
    from .views import render_error

    return render_error(error)
