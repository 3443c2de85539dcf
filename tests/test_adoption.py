"""An existing Flask-Login application moves to flask-guardian, from a fresh folder and a
fresh virtual environment with the wheel built from this checkout, following the docs
(migrating-from-flask-login.md, existing-users-table.md, application-factory.md,
templates.md for Flask-WTF):

1. *Before*: an application-factory app on Flask-Login, Flask-Migrate and Flask-WTF, with a
   ``users`` table made by its own migration and rows whose passwords are Werkzeug hashes
   (``scrypt`` and ``pbkdf2``), signing in by username.
2. *After*: the same app on flask-guardian (``user_model`` as an import string,
   ``GUARDIAN_LOGIN_FIELDS = ["username", "email"]``, ``CSRFProtect`` still on, the
   registration form protected by ``guardian.csrf_protect``); ``flask db migrate`` and
   ``flask db upgrade`` add the columns and tables as generated.
3. Existing users sign in by password (by username and by email; their hash becomes
   argon2id), a new one registers and is signed in by ``sign_in_user``; ``flask db
   downgrade`` takes flask-guardian's part away again and keeps every row.

The virtual environment is made once per run (a minute: the wheel and its dependencies
come from the package index pip is configured with).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BEFORE_INIT = '''
import os

from flask import Flask
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

db = SQLAlchemy()
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


def create_app():
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="an-old-secret-key-of-this-app-0123456789",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.abspath("app.db"),
    )
    db.init_app(app)
    migrate.init_app(app, db)
    login_manager.init_app(app)
    csrf.init_app(app)
    from . import models  # noqa: F401
    return app
'''

BEFORE_MODELS = '''
from flask_login import UserMixin

from . import db, login_manager


class User(UserMixin, db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True, nullable=False)
    email = db.Column(db.String(120), unique=True, nullable=False)
    password = db.Column(db.String(255))


@login_manager.user_loader
def load_user(user_id):
    return db.session.get(User, int(user_id))
'''

AFTER_INIT = '''
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from flask_guardian import Guardian

db = SQLAlchemy()
migrate = Migrate()
csrf = CSRFProtect()
guardian = Guardian(db=db, user_model="app.models:User")


def create_app():
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="an-old-secret-key-of-this-app-0123456789",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.abspath("app.db"),
        GUARDIAN_COOKIE_SECURE=False,
        GUARDIAN_LOGIN_FIELDS=["username", "email"],
    )
    db.init_app(app)
    migrate.init_app(app, db)   # before guardian.init_app: it hands Flask-Migrate its hooks
    csrf.init_app(app)
    guardian.init_app(app)
    from . import views
    app.register_blueprint(views.bp)
    return app
'''

AFTER_MODELS = '''
from flask_guardian import UserMixin

from . import db


class User(db.Model, UserMixin):
    __tablename__ = "users"
    username = db.Column(db.String(80), unique=True, nullable=False)
    password_hash = db.Column("password", db.String(255))
'''

AFTER_VIEWS = '''
from flask import Blueprint, redirect, request

from flask_guardian import current_user, login_required, sign_in_user

from . import db, guardian

bp = Blueprint("main", __name__)


@bp.get("/me")
@login_required
def me():
    return current_user.username


@bp.post("/register")
@guardian.csrf_protect
def register():
    user = guardian.create_user(request.form["email"], request.form["password"],
                                username=request.form["username"])
    result = sign_in_user(user)
    return redirect(result.redirect_url, 303)
'''

SEED = '''
import sqlite3

from werkzeug.security import generate_password_hash

with sqlite3.connect("app.db") as conn:
    conn.execute("INSERT INTO users (username, email, password) VALUES (?, ?, ?)",
                 ("alice", "alice@example.com",
                  generate_password_hash("alice-password-1", method="scrypt")))
    conn.execute("INSERT INTO users (username, email, password) VALUES (?, ?, ?)",
                 ("bob", "bob@example.com",
                  generate_password_hash("bob-password-12", method="pbkdf2:sha256")))
'''

DRIVE = '''
import json
import sqlite3

from app import create_app

app = create_app()
seen = {}


def csrf(client):
    return client.get("/auth/csrf").get_json()["csrfToken"]


def sign_in(client, login, password):
    answer = client.post("/auth/signin", json={"login": login, "password": password},
                         headers={"X-CSRF-Token": csrf(client)})
    return answer.get_json()


alice = app.test_client()
seen["alice_wrong"] = sign_in(alice, "alice", "not-her-password")["ok"]
seen["alice"] = sign_in(alice, "alice", "alice-password-1")["ok"]
seen["alice_me"] = alice.get("/me").text
bob = app.test_client()
seen["bob_by_email"] = sign_in(bob, "bob@example.com", "bob-password-12")["ok"]
seen["bob_me"] = bob.get("/me").text
carol = app.test_client()
token = csrf(carol)
answer = carol.post("/register", data={"username": "carol", "email": "carol@example.com",
                                       "password": "carol-password-1", "csrf_token": token})
seen["register"] = answer.status_code
seen["carol_me"] = carol.get("/me").text
seen["anonymous_me"] = app.test_client().get("/me").status_code
with sqlite3.connect("app.db") as conn:
    seen["hashes"] = dict(conn.execute(
        "SELECT username, substr(password, 1, 10) FROM users").fetchall())
print(json.dumps(seen))
'''


def run(venv: Path, where: Path, *args: str) -> str:
    """Run ``args`` with the fresh environment's executables, in ``where``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("GUARDIAN_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["FLASK_APP"] = "app:create_app"
    done = subprocess.run(args, cwd=where, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel built from this checkout and what the
    application itself uses (Flask-Login before, Flask-Migrate and Flask-WTF both times)."""
    given = os.environ.get("GUARDIAN_TEST_DIST")
    if given:
        dist = Path(given)
    else:
        dist = tmp_path_factory.mktemp("dist")
        subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel",
                        "--outdir", str(dist), str(ROOT)],
                       check=True, capture_output=True, timeout=300)
    wheels = sorted(dist.glob("flask_guardian_sessions-*.whl"))
    assert wheels, f"no wheel in {dist}"
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    run(where, where, "python", "-m", "pip", "install", "--quiet",
        "--disable-pip-version-check", str(wheels[-1]), "Flask-Login", "Flask-Migrate",
        "Flask-WTF")
    return where


def test_a_flask_login_app_with_its_own_users_moves_to_flask_guardian(
    venv: Path, tmp_path: Path
) -> None:
    app = tmp_path / "project"
    app.mkdir()
    # Before: the Flask-Login app makes its table by its own migration and has users.
    write(app, {"app/__init__.py": BEFORE_INIT, "app/models.py": BEFORE_MODELS})
    run(venv, app, "flask", "db", "init")
    run(venv, app, "flask", "db", "migrate", "-m", "users")
    run(venv, app, "flask", "db", "upgrade")
    write(app, {"seed.py": SEED})
    run(venv, app, "python", "seed.py")

    # After: the same app on flask-guardian; the migration is generated and run as is.
    write(app, {"app/__init__.py": AFTER_INIT, "app/models.py": AFTER_MODELS,
                "app/views.py": AFTER_VIEWS, "drive.py": DRIVE})
    run(venv, app, "flask", "db", "migrate", "-m", "flask-guardian")
    run(venv, app, "flask", "db", "upgrade")
    seen = json.loads(run(venv, app, "python", "drive.py").strip().splitlines()[-1])
    assert seen["alice_wrong"] is False
    assert (seen["alice"], seen["alice_me"]) == (True, "alice")          # by username
    assert (seen["bob_by_email"], seen["bob_me"]) == (True, "bob")       # by email
    assert (seen["register"], seen["carol_me"]) == (303, "carol")        # sign_in_user
    assert seen["anonymous_me"] in (302, 303)
    # The Werkzeug hashes were upgraded on the successful sign-ins.
    assert all(h.startswith("$argon2id$") for h in seen["hashes"].values()), seen["hashes"]

    # And back: flask-guardian's columns and tables go, every user stays.
    run(venv, app, "flask", "db", "downgrade")
    count = run(venv, app, "python", "-c",
                "import sqlite3; c = sqlite3.connect('app.db'); "
                "print(c.execute('SELECT count(*) FROM users').fetchone()[0], "
                "sorted(r[1] for r in c.execute('PRAGMA table_info(users)')))")
    assert count.startswith("3 "), count
    assert "uniquifier" not in count and "session_version" not in count, count
