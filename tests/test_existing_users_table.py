"""An application's own users table (docs/existing-users-table.md): columns under other
names mapped with SQLAlchemy's own means, no ``name`` and no ``role`` of its own
(``name = None``, ``role = "member"``), rows inserted outside the ORM with no uniquifier.
Every strategy; SQLite (the SQL that differs by dialect is tested in test_migrations.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g, jsonify
from flask_sqlalchemy import SQLAlchemy
from helpers import BASE_CONFIG, sign_in, strategy_config
from servers import delete_redis_keys
from sqlalchemy import Boolean, Column, String, text
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import generate_password_hash

from flask_guardian import Guardian, UserMixin, login_required, roles_required

ANN = ("ann@example.com", "ann-password-123")


@pytest.fixture
def own_table_app(tmp_path: Path, strategy: str) -> Iterator[tuple[Flask, Any, Guardian]]:
    app = Flask("own_users_table_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'own.db'}",
                      SESSION_STRATEGY=strategy, **strategy_config(strategy))
    db = SQLAlchemy(app)

    class Account(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "accounts"
        password_hash: Mapped[str | None] = mapped_column("password", String(255))
        is_active = Column("enabled", Boolean, nullable=False, server_default="1")
        name = None
        role = "member"

    guardian = Guardian(app, db=db, user_model=Account)

    @app.get("/me")
    @login_required
    def me() -> Any:
        return jsonify(g.session.to_dict()["user"])

    @app.get("/members")
    @roles_required("member")
    def members() -> str:
        return "members only"

    with app.app_context():
        db.create_all()
        # A row as the application's own code writes it: raw SQL, Werkzeug's hash, and no
        # uniquifier (the server default '').
        db.session.execute(
            text("INSERT INTO accounts (email, password) VALUES (:email, :password)"),
            {"email": ANN[0], "password": generate_password_hash(ANN[1])},
        )
        db.session.commit()
    yield app, db, guardian
    with app.app_context():
        db.engine.dispose()
    if strategy == "redis":
        delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])


def test_columns_under_other_names_are_keyed_by_attribute(
    own_table_app: tuple[Flask, Any, Guardian],
) -> None:
    _, _, guardian = own_table_app
    table = guardian.user_model.__table__
    assert table.c.password_hash.name == "password"
    assert table.c.is_active.name == "enabled"
    assert "name" not in table.c and "role" not in table.c


def test_a_row_of_the_apps_own_signs_in_with_no_name_and_one_role(
    own_table_app: tuple[Flask, Any, Guardian],
) -> None:
    app, db, _ = own_table_app
    client = app.test_client()
    assert sign_in(client, *ANN).status_code == 303
    assert client.get("/me").get_json() == {"id": 1, "email": ANN[0], "name": None,
                                            "role": "member"}
    assert client.get("/members").text == "members only"
    assert client.get("/auth/session").get_json()["user"]["role"] == "member"
    with app.app_context():
        password, uniquifier = db.session.execute(
            text("SELECT password, uniquifier FROM accounts")).one()
    assert password.startswith("$argon2id$")  # Werkzeug's hash upgraded
    assert len(uniquifier) == 32  # given at sign-in, before any session recorded it


def test_a_given_uniquifier_is_kept_and_binds_the_session(
    own_table_app: tuple[Flask, Any, Guardian],
) -> None:
    app, db, _ = own_table_app
    client = app.test_client()
    assert sign_in(client, *ANN).status_code == 303
    with app.app_context():
        first = db.session.execute(text("SELECT uniquifier FROM accounts")).scalar_one()
    assert sign_in(app.test_client(), *ANN).status_code == 303
    with app.app_context():
        assert db.session.execute(text("SELECT uniquifier FROM accounts")).scalar_one() == first
        # A new account on the same id (deleted and re-inserted outside the ORM) cannot
        # adopt the old one's session.
        db.session.execute(text("DELETE FROM accounts"))
        db.session.execute(
            text("INSERT INTO accounts (id, email, password) VALUES (1, :e, :p)"),
            {"e": "eve@example.com", "p": generate_password_hash("eve-password-123")},
        )
        db.session.commit()
    if app.config["SESSION_STRATEGY"] == "database":  # the others check the row at refresh
        assert client.get("/me").status_code == 303


def test_create_user_and_set_role_on_a_table_without_them(
    own_table_app: tuple[Flask, Any, Guardian],
) -> None:
    app, _, guardian = own_table_app
    with app.app_context():
        user = guardian.create_user("bob@example.com", "bob-password-123")
        assert (user.name, user.role) == (None, "member")
        guardian.create_user("cy@example.com", "cy-password-1234", role="member")
        with pytest.raises(ValueError, match="no name column"):
            guardian.create_user("dee@example.com", "dee-password-123", name="Dee")
        with pytest.raises(ValueError, match="no role column"):
            guardian.create_user("eve@example.com", "eve-password-123", role="admin")
        with pytest.raises(ValueError, match="no role column"):
            guardian.set_role(user, "admin")
    assert sign_in(app.test_client(), "bob@example.com", "bob-password-123").status_code == 303


@pytest.mark.parametrize(
    "body, says",
    [
        ({"role": None}, "no role column"),
        ({"role": "it's"}, "no role column"),
        ({"name": "everyone"}, "set name = None"),
        ({"password_hash": Column("password", String(255), key="pw")}, "key='password_hash'"),
    ],
    ids=["role-none", "role-quote", "name-constant", "column-keyed-otherwise"],
)
def test_a_model_that_cannot_work_fails_at_start_naming_the_fix(
    body: dict[str, Any], says: str
) -> None:
    app = Flask("bad_own_table_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://")
    db = SQLAlchemy(app)
    model = type("Bad", (db.Model, UserMixin), {"__tablename__": "bad", **body})
    with pytest.raises(TypeError, match=says):
        Guardian(app, db=db, user_model=model)


def test_create_user_fills_the_applications_own_required_columns(tmp_path: Path) -> None:
    """A table with its own NOT NULL column (a username) gets new users through
    ``create_user(..., username=...)``; a column the model does not map, or one
    flask-guardian keeps itself, is refused before anything is written."""
    app = Flask("own_columns_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'o.db'}")
    db = SQLAlchemy(app)

    class Member(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        username: Mapped[str] = mapped_column(String(80), unique=True, nullable=False)

    guardian = Guardian(app, db=db, user_model=Member)
    with app.app_context():
        db.create_all()
        made = guardian.create_user("cat@example.com", "cat-password-123", username="cat")
        assert db.session.get(Member, made.id).username == "cat"
        for columns, message in (({"nickname": "x"}, "no column attribute 'nickname'"),
                                 ({"is_active": False}, "sets 'is_active' itself"),
                                 ({"password_hash": "x"}, "sets 'password_hash' itself")):
            with pytest.raises(TypeError, match=message):
                guardian.create_user("dog@example.com", "dog-password-123", username="dog",
                                     **columns)
        assert db.session.query(Member).count() == 1
