"""The flask-guardian example app: Svelte Guardian's demo, in Flask, on SQLite.

    scripts/run-example                                 # database strategy
    GUARDIAN_EXAMPLE_STRATEGY=jwt scripts/run-example   # jwt strategy
    GUARDIAN_EXAMPLE_STRATEGY=redis scripts/run-example # redis strategy (a local Redis)
    PORT=8000 scripts/run-example

Pages: a root layout whose nav shows Home, Dashboard when signed in and Admin only for the
role ``admin``, with the package's auth-status partial; ``/dashboard`` reads ``g.session``;
``/admin`` is behind ``roles_required("admin")``; ``/admin/danger-zone`` also needs a
fresh sign-in (``fresh_login_required``: the password again after 10 minutes); ``/reports``
is protected by configuration (``GUARDIAN_PROTECTED_ROUTES``); ``/auth/sessions`` lists the
user's devices; ``/api/me`` answers JSON, to a cookie or to ``Authorization: Bearer <token>``
(an access token of ``POST /auth/token``, any strategy; ``examples/api_client.py`` is a
client; or, jwt strategy, the session JWT).

``create_app()`` is also what ``flask --app examples/app.py guardian ...`` and the browser
tests use.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, g, jsonify, render_template
from flask_sqlalchemy import SQLAlchemy

from flask_guardian import (
    AuthError,
    Guardian,
    fresh_login_required,
    login_required,
    roles_required,
)
from flask_guardian.state import get_state

HERE = Path(__file__).resolve().parent

#: The demo users seeded on first start: (email, password, name, role).
DEMO_USERS = [
    ("admin@example.com", "admin-password-123", "Ada Admin", "admin"),
    ("user@example.com", "user-password-123", "Uma User", "user"),
]


def _instance_secrets(instance: Path) -> dict[str, str]:
    """Random keys made on first start and kept in the instance folder (mode 0600), so
    sessions survive a restart. A real deployment reads them from its secret store."""
    path = instance / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    values = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "GUARDIAN_JWT_SECRET": secrets.token_urlsafe(48),  # >= 32 bytes for HS256
    }
    instance.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    return values


def create_app(
    strategy: str | None = None, database_url: str | None = None, **config: Any
) -> Flask:
    """Build the example app. ``strategy`` defaults to ``GUARDIAN_EXAMPLE_STRATEGY``
    (``database`` or ``jwt``), ``database_url`` to ``examples/instance/example.db``;
    ``config`` overrides anything (tests pass cheaper password hashing)."""
    app = Flask(__name__, root_path=str(HERE), instance_path=str(HERE / "instance"))
    strategy = strategy or os.environ.get("GUARDIAN_EXAMPLE_STRATEGY", "database")
    instance = Path(app.instance_path)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url or f"sqlite:///{instance / 'example.db'}",
        SESSION_STRATEGY=strategy,
        # Secure cookies are the default and what production wants (the cookie is then
        # named __Host-guardian). A browser never sends a Secure cookie back over plain
        # http, so a local http://127.0.0.1 demo turns it off. Never do this in production.
        GUARDIAN_COOKIE_SECURE=False,
        # Route protection by configuration, like Svelte Guardian's routeProtection: the
        # longest matching prefix wins, so /reports/audit needs admin, the rest of
        # /reports only a signed-in user.
        GUARDIAN_PROTECTED_ROUTES={
            "/reports": {},
            "/reports/audit": {"roles": ["admin"]},
        },
        # Answer only the hosts this app is served under: Werkzeug builds some absolute
        # URLs from the Host header (docs/deployment.md, "The Host header").
        TRUSTED_HOSTS=[
            h.strip() for h in os.environ.get(
                "GUARDIAN_EXAMPLE_TRUSTED_HOSTS", "127.0.0.1,localhost"
            ).split(",") if h.strip()
        ],
    )
    if "SECRET_KEY" not in config:
        app.config.update(_instance_secrets(instance))
    if strategy == "redis":
        # Sessions (and, with any strategy that has a Redis URL, the lockout counters) in
        # the Redis at this URL; the other strategies need no Redis at all.
        app.config.update(
            GUARDIAN_REDIS_URL=os.environ.get("GUARDIAN_EXAMPLE_REDIS_URL",
                                              "redis://127.0.0.1:6379/0"),
            GUARDIAN_REDIS_PREFIX="guardian-example:",
        )
    app.config.update(config)

    db = SQLAlchemy(app)
    guardian = Guardian(app, db=db)

    @app.get("/")
    def home() -> str:
        return render_template("home.html", demo_users=DEMO_USERS)

    @app.get("/dashboard")
    @login_required
    def dashboard() -> str:
        # g.session is the flask_guardian.Session of this request (never None here).
        return render_template("dashboard.html", current=g.session)

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> str:
        users = db.session.execute(
            db.select(guardian.user_model).order_by(guardian.user_model.id)
        ).scalars()
        return render_template("admin.html", users=list(users))

    @app.get("/admin/danger-zone")
    @roles_required("admin")
    @fresh_login_required()  # signed in (or re-authenticated) within GUARDIAN_FRESH_WITHIN
    def danger_zone() -> str:
        settings = get_state().settings
        fresh_until = g.session.auth_time + timedelta(seconds=settings.fresh_within)
        return render_template("danger_zone.html", current=g.session, fresh_until=fresh_until)

    # No decorator: GUARDIAN_PROTECTED_ROUTES guards these before the view runs.
    @app.get("/reports")
    def reports() -> str:
        return render_template("reports.html", audit=False)

    @app.get("/reports/audit")
    def reports_audit() -> str:
        return render_template("reports.html", audit=True)

    app.register_blueprint(_api_blueprint())

    with app.app_context():
        db.create_all()
        if db.session.execute(db.select(guardian.user_model.id).limit(1)).first() is None:
            for email, password, name, role in DEMO_USERS:
                guardian.create_user(email, password, name=name, role=role)
    return app


def _api_blueprint() -> Blueprint:
    """A JSON API. Under the jwt strategy it accepts ``Authorization: Bearer <jwt>`` (no
    CSRF token needed: a bearer header is no ambient credential); the cookie works too."""
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.errorhandler(AuthError)
    def api_error(error: AuthError) -> Any:
        # Always JSON under /api (the package would redirect a browser-like client).
        return jsonify(ok=False, error=error.code, message=error.message), error.status_code

    @api.get("/me")
    @login_required
    def me() -> Any:
        return jsonify(g.session.to_dict() | {"strategy": g.session.strategy})

    return api


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    app = create_app()
    url = f"http://127.0.0.1:{port}"
    bar = "=" * 64
    print(bar)
    print(f"flask-guardian example ({app.config['SESSION_STRATEGY']} strategy)")
    print(f"  open      {url}")
    print(f"  database  {app.config['SQLALCHEMY_DATABASE_URI']}")
    print("  demo users:")
    for email, password, _name, role in DEMO_USERS:
        print(f"    {email:<20} {password:<20} (role {role})")
    if app.config["SESSION_STRATEGY"] == "jwt":
        print(f"  API       curl -H 'Authorization: Bearer <jwt>' {url}/api/me")
        print("            (the <jwt> is the 'guardian' cookie; docs/strategies.md shows how)")
    else:
        print("  jwt strategy: GUARDIAN_EXAMPLE_STRATEGY=jwt scripts/run-example")
    print(bar, flush=True)
    app.run(host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
