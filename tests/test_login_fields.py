"""``GUARDIAN_LOGIN_FIELDS``: the user columns a sign-in identifier is matched against
(``email`` normalised as stored; other columns NFKC-normalised, trimmed, compared exactly),
through the form or JSON field ``email`` or ``login`` and ``guardian.authenticate``; the
lockout and the one-hash rule unchanged; a name that is not a column fails ``init_app``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import BASE_CONFIG, csrf_token, strategy_config
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flask_guardian import ConfigurationError, Guardian, UserMixin
from flask_guardian.state import get_state

ALICE = ("alice", "alice@example.com", "alice-password-123")
# Bob's username is Alice's email: the fields are tried in order, username first.
BOB = ("alice@example.com", "bob@example.com", "bob-password-1234")
FIELDS = ["username", "email"]


def build(database_url: str, strategy: str, **config: Any) -> Flask:
    """An app whose own user model has a ``username`` column, with Alice and Bob."""
    app = Flask("login_fields_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=database_url,
                      SESSION_STRATEGY=strategy, GUARDIAN_LOGIN_FIELDS=FIELDS,
                      GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    app.config.update(strategy_config(strategy))
    app.config.update(config)
    db = SQLAlchemy(app)

    class Member(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        username: Mapped[str] = mapped_column(String(80), unique=True)

    Guardian(app, db=db, user_model=Member)
    with app.app_context():
        db.create_all()
        hasher = get_state(app).hasher
        for username, email, password in (ALICE, BOB):
            db.session.add(Member(username=username, email=email,
                                  password_hash=hasher.hash(password)))
        db.session.commit()
    return app


@pytest.fixture
def app(database_url: str, strategy: str) -> Iterator[Flask]:
    app = build(database_url, strategy)
    yield app
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
    # Redis keys live under this run's prefix: the session's end deletes them.


def post(client: Any, password: str, **fields: str) -> Any:
    """A JSON sign-in with ``fields`` (``login=...`` or ``email=...``)."""
    return client.post("/auth/signin", json={**fields, "password": password,
                                             "csrf_token": csrf_token(client)})


def signed_in_as(client: Any) -> str | None:
    body = client.get("/auth/session").get_json()
    return None if body is None else str(body["user"]["email"])


def test_sign_in_by_username_with_the_login_field(app: Flask) -> None:
    client = app.test_client()
    assert post(client, ALICE[2], login="alice").status_code == 200
    assert signed_in_as(client) == ALICE[1]


def test_sign_in_by_email_with_the_email_field(app: Flask) -> None:
    client = app.test_client()
    assert post(client, BOB[2], email="Bob@Example.com ").status_code == 200
    assert signed_in_as(client) == BOB[1]


def test_the_form_takes_login_too(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/auth/signin", data={
        "login": " alice ", "password": ALICE[2], "csrf_token": csrf_token(client)})
    assert response.status_code == 303
    assert signed_in_as(client) == ALICE[1]
    page = app.test_client().get("/auth/signin").get_data(as_text=True)
    assert "Username or email" in page


def test_usernames_are_compared_exactly(app: Flask) -> None:
    client = app.test_client()
    response = post(client, ALICE[2], login="Alice")
    assert response.status_code == 401
    assert response.get_json() == {"ok": False, "error": "invalid_credentials"}


def test_fields_are_tried_in_order(app: Flask) -> None:
    # "alice@example.com" is Bob's username and Alice's email: username comes first.
    client = app.test_client()
    assert post(client, BOB[2], login="alice@example.com").status_code == 200
    assert signed_in_as(client) == BOB[1]
    assert post(app.test_client(), ALICE[2], login="alice@example.com").status_code == 401


def test_case_variants_share_one_lockout(app: Flask) -> None:
    client = app.test_client()
    for variant in ("ALICE", "Alice", "aLiCe"):
        assert post(client, "wrong-password-00", login=variant).status_code == 401
    response = post(client, ALICE[2], login="alice")
    assert response.status_code == 429
    assert response.get_json()["error"] == "too_many_attempts"


def test_one_hash_per_attempt_whether_or_not_an_account_matches(app: Flask) -> None:
    client = app.test_client()
    hasher = get_state(app).hasher
    post(client, "warm-up-password", login="nobody")  # the hash kinds are read once
    for login in ("alice", "nobody", "alice@example.com", "x" * 400):
        before = hasher.hash_computations
        post(client, "wrong-password-00", login=login)
        assert hasher.hash_computations == before + 1, login


def test_authenticate_matches_the_login_fields(app: Flask) -> None:
    guardian = app.extensions["guardian"]
    with app.test_request_context("/", method="POST"):
        assert guardian.authenticate("alice", ALICE[2]).email == ALICE[1]
        assert guardian.authenticate("bob@example.com", BOB[2]).username == BOB[0]
        assert guardian.authenticate("bob", BOB[2]) is None


def test_default_is_email_only(database_url: str, strategy: str) -> None:
    app = build(database_url, strategy, GUARDIAN_LOGIN_FIELDS=["email"])
    assert post(app.test_client(), ALICE[2], login="alice").status_code == 401
    client = app.test_client()
    assert post(client, ALICE[2], email=ALICE[1]).status_code == 200
    assert "Username" not in app.test_client().get("/auth/signin").get_data(as_text=True)


@pytest.mark.parametrize("value", ["email", [], ["email", "email"], [3], ["bad name"], None])
def test_unusable_values_fail_init_app(value: object) -> None:
    app = Flask("bad_login_fields")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://",
                      GUARDIAN_LOGIN_FIELDS=value)
    with pytest.raises(ConfigurationError) as caught:
        Guardian(app, db=SQLAlchemy(app))
    assert caught.value.key == "GUARDIAN_LOGIN_FIELDS"


def test_a_field_that_is_not_a_column_fails_init_app() -> None:
    app = Flask("missing_login_field")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://",
                      GUARDIAN_LOGIN_FIELDS=["username", "email"])
    with pytest.raises(ConfigurationError, match="no column attribute 'username'") as caught:
        Guardian(app, db=SQLAlchemy(app))
    assert caught.value.key == "GUARDIAN_LOGIN_FIELDS"
