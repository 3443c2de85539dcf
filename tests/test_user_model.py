"""The application's own user model (mixing in UserMixin) works like the ready one; the
extension's tables live in db.metadata so create_all and Alembic see them."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g
from flask_sqlalchemy import SQLAlchemy
from helpers import BASE_CONFIG, sign_in, strategy_config
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flask_guardian import Guardian, UserMixin, login_required

# The full database matrix: an application's own users table (collations differ).
pytestmark = pytest.mark.databases


def make_custom_app(database_url: str, strategy: str) -> tuple[Flask, Any, Any]:
    app = Flask("custom_user_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=database_url,
                      SESSION_STRATEGY=strategy, **strategy_config(strategy))
    db = SQLAlchemy(app)

    class Member(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        team: Mapped[str | None] = mapped_column(String(50), nullable=True)

    guardian = Guardian(app, db=db, user_model=Member)

    @app.get("/me")
    @login_required
    def me() -> str:
        return g.session.user.email

    with app.app_context():
        db.create_all()
    return app, db, guardian


def test_custom_user_model(database_url: str, strategy: str) -> None:
    app, db, guardian = make_custom_app(database_url, strategy)
    assert guardian.user_model.__name__ == "Member"
    assert {"members", "guardian_sessions", "guardian_revocations",
            "guardian_login_attempts"} <= set(db.metadata.tables)
    assert "guardian_users" not in db.metadata.tables
    with app.app_context():
        member = guardian.create_user("Team@Example.com", "team-password-123", name="Teammate")
        assert member.email == "team@example.com"  # stored normalised
        member.team = "blue"
        db.session.commit()
    client = app.test_client()
    assert sign_in(client, "team@example.com", "team-password-123").status_code == 303
    assert client.get("/me").get_data(as_text=True) == "team@example.com"
    with app.app_context():
        db.engine.dispose()


def test_duplicate_email_in_another_case_is_refused(app: Flask) -> None:
    guardian = app.extensions["guardian"]
    with app.app_context(), pytest.raises(ValueError, match="exists"):
        guardian.create_user("USER@example.com", "another-password-1")


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [("not-an-email", "long-enough-password", "email"),
     ("a@b.c", "short", "at least"),
     ("a@b.c", "p" * 2000, "at most"),
     ("a b@c.d", "long-enough-password", "email")],
)
def test_create_user_validates(app: Flask, email: str, password: str, message: str) -> None:
    guardian = app.extensions["guardian"]
    with app.app_context(), pytest.raises(ValueError, match=message):
        guardian.create_user(email, password)


def test_user_model_must_mix_in_user_mixin() -> None:
    db = SQLAlchemy()

    class Plain(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "plain"
        id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(TypeError, match="UserMixin"):
        Guardian(db=db, user_model=Plain)


@pytest.mark.parametrize(
    "email",
    [
        "evil\u200b@example.com",  # zero-width space: a look-alike of evil@example.com
        "ad\u00adm\u00adin@example.com",  # soft hyphens
        "user\u202e@example.com",  # right-to-left override
        "x@@example.com",
        "a@b",
        "@example.com",
        "user@",
        "user@exa mple.com",
        "user@-example-.com",
        "us..er@example.com",
    ],
)
def test_create_user_refuses_look_alike_and_malformed_emails(app: Flask, email: str) -> None:
    guardian = app.extensions["guardian"]
    with app.app_context(), pytest.raises(ValueError, match="email"):
        guardian.create_user(email, "long-enough-password")


def test_create_user_accepts_an_ordinary_international_address(app: Flask) -> None:
    guardian = app.extensions["guardian"]
    with app.app_context():
        user = guardian.create_user("José.Núñez+tag@Example.COM", "long-enough-password")
        assert user.email == "josé.núñez+tag@example.com"
