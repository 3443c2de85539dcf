"""flask-guardian apps for the benchmark, built only through the public API (SPEC §2)."""

from __future__ import annotations

import importlib
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_harness import Response, Target, build_environ, call
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

REPO_ROOT = Path(__file__).resolve().parent.parent
EMAIL = "a@example.com"
PASSWORD = "a-long-password-123"
BODY = "ok"

#: An app without Flask's SECRET_KEY (flask-guardian gets its own): Flask then does not
#: open its cookie session on every request.
NO_FLASK_KEY: dict[str, Any] = {
    "SECRET_KEY": None,
    "GUARDIAN_SECRET_KEY": "guardian-benchmark-secret-" + "k" * 32,
}

#: OWASP's argon2id minimum, the guardian defaults; set explicitly so the report names them.
ARGON2 = {
    "GUARDIAN_ARGON2_MEMORY_COST": 19456,
    "GUARDIAN_ARGON2_TIME_COST": 2,
    "GUARDIAN_ARGON2_PARALLELISM": 1,
}


def import_guardian() -> Any:
    """The ``flask_guardian`` module from this checkout; raises with the reason."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("flask_guardian")


def guardian_unavailable() -> str | None:
    """None when flask_guardian imports and has what the benchmark uses, else why not."""
    try:
        module = import_guardian()
    except Exception:
        return "flask_guardian does not import:\n" + traceback.format_exc(limit=3)
    missing = [n for n in ("Guardian", "login_required") if not hasattr(module, n)]
    if missing:
        return f"flask_guardian has no {', '.join(missing)} yet"
    return None


@dataclass
class GuardianApp:
    """One Flask app with its own ``db`` and ``Guardian``, a user, and a signed-in cookie."""

    label: str
    app: Flask
    db: SQLAlchemy
    guardian: Any
    cookie_name: str
    cookie_value: str
    signin: Response
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def cookie_header(self) -> str:
        return f"{self.cookie_name}={self.cookie_value}"

    def target(self, name: str, *, path: str = "/protected") -> Target:
        return Target(
            name,
            self.app,
            build_environ(path, cookie=self.cookie_header),
            follow_cookie=self.cookie_name,
        )

    def readers(self) -> list[Any]:
        """Statement sources outside SQLAlchemy's events, for counting queries.

        flask-guardian's database strategy runs its per-request SELECT on a raw DBAPI
        connection (``flask_guardian/lookup.py``), invisible to ``before_cursor_execute``;
        its ``RowReader`` offers ``listen``/``unlisten`` for exactly this. Reached through
        internal attributes, so it degrades to nothing if they change.
        """
        guardian = self.app.extensions.get("guardian")
        state = guardian.state_for(self.app) if guardian is not None else None
        reader = getattr(getattr(state, "strategy", None), "reader", None)
        if reader is not None and hasattr(reader, "listen") and hasattr(reader, "unlisten"):
            return [reader]
        return []

    def engine(self) -> Any:
        with self.app.app_context():
            return self.db.engine


def build_guardian_app(
    label: str,
    *,
    strategy: str,
    uri: str,
    engine_options: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> GuardianApp:
    """A fresh app: tables dropped and created, one user, signed in once via POST."""
    fg = import_guardian()
    app = Flask(f"bench_guardian_{label}")
    config: dict[str, Any] = {
        "SECRET_KEY": "guardian-benchmark-secret-" + "k" * 32,
        "SQLALCHEMY_DATABASE_URI": uri,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options or {},
        "SESSION_STRATEGY": strategy,
        "GUARDIAN_JWT_SECRET": "guardian-benchmark-jwt-secret-" + "j" * 32,
        "GUARDIAN_COOKIE_SECURE": False,
        "GUARDIAN_CSRF_ENABLED": False,
        **ARGON2,
        **(extra or {}),
    }
    app.config.update(config)
    db = SQLAlchemy(app)
    guardian = fg.Guardian(app, db=db)

    def protected() -> str:
        return BODY

    # The package is imported at run time (it may be missing), hence the call form.
    app.add_url_rule("/protected", view_func=fg.login_required(protected))

    with app.app_context():
        db.drop_all()
        db.create_all()
        guardian.create_user(EMAIL, PASSWORD, role="user")

    response = sign_in(app)
    cookie_name = "guardian"
    value = response.cookie(cookie_name)
    if response.status_code != 303 or not value:
        raise RuntimeError(
            f"{label}: POST /auth/signin gave {response.status}, Set-Cookie "
            f"{[v for k, v in response.headers if k.lower() == 'set-cookie']!r}, "
            f"body {response.body[:300]!r}"
        )
    ga = GuardianApp(label, app, db, guardian, cookie_name, value, response, config)
    check = call(app, build_environ("/protected", cookie=ga.cookie_header))
    if check.status_code != 200 or check.body != BODY.encode():
        raise RuntimeError(
            f"{label}: the signed-in cookie does not open /protected: {check.status} "
            f"{check.body[:300]!r}"
        )
    return ga


def sign_in(app: Flask) -> Response:
    """POST the sign-in form, as a browser does (CSRF is off in the benchmark config)."""
    environ = build_environ(
        "/auth/signin", method="POST", data={"email": EMAIL, "password": PASSWORD}
    )
    return call(app, environ)


def signin_target(ga: GuardianApp) -> Target:
    """Sign-in as a timed target: each request is a complete POST /auth/signin."""
    environ = build_environ(
        "/auth/signin", method="POST", data={"email": EMAIL, "password": PASSWORD}
    )
    return Target(f"POST /auth/signin, {ga.label}", ga.app, environ, expect_status="303 SEE OTHER")


def stored_hash(ga: GuardianApp) -> str:
    """The password hash stored for the benchmark user (it names the argon2 parameters)."""
    with ga.app.app_context():
        user = ga.guardian.user_model.query.filter_by(email=EMAIL).one()
        return str(user.password_hash)
