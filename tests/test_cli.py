"""``flask guardian ...``: create users, change roles, list and end sessions, purge. Errors
are a clean message and a non-zero exit, never a traceback. Both strategies, every
database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from helpers import ADMIN, USER, db_of, guardian_of, needs_sql_registry, sign_in, sign_in_ok
from sqlalchemy import func, select

# The full database matrix: users and session rows written and purged.
pytestmark = pytest.mark.databases

NEW_PASSWORD = "correct-horse-battery"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Safari/604.1"


def run(app: Flask, *args: str, input: str | None = None) -> Any:
    return app.test_cli_runner().invoke(args=["guardian", *args], input=input)


def assert_clean_error(result: Any, *fragments: str) -> None:
    """A refusal: non-zero exit, a message naming the problem, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def user_count(app: Flask) -> int:
    model = guardian_of(app).user_model
    with app.app_context():
        return int(db_of(app).session.execute(select(func.count(model.id))).scalar_one())


def stored_user(app: Flask, email: str) -> Any:
    model = guardian_of(app).user_model
    with app.app_context():
        user = db_of(app).session.execute(
            select(model).where(model.email == email)
        ).scalar_one_or_none()
        if user is not None:
            db_of(app).session.expunge(user)
    return user


def browser(app: Flask, agent: str, who: tuple[str, str] = USER) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    sign_in_ok(client, who)
    return client


def is_signed_in(client: Any) -> bool:
    return client.get("/auth/session").get_json() is not None


def test_guardian_group_lists_its_commands(app: Flask) -> None:
    result = run(app, "--help")
    assert result.exit_code == 0
    for command in ("create-user", "set-role", "sessions", "revoke", "purge"):
        assert command in result.output


# -- create-user ------------------------------------------------------------------------


def test_create_user_asks_for_the_password_twice_hidden(app: Flask) -> None:
    result = run(app, "create-user", "New.Person@Example.com", "--role", "editor",
                 "--name", "New Person", input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert NEW_PASSWORD not in result.output  # hidden input is not echoed
    assert "Password:" in result.output and "Repeat" in result.output  # asked twice
    assert "new.person@example.com" in result.output
    user = stored_user(app, "new.person@example.com")
    assert (user.name, user.role, user.is_active) == ("New Person", "editor", True)
    assert user.password_hash and NEW_PASSWORD not in user.password_hash
    client = app.test_client()
    assert sign_in(client, "new.person@example.com", NEW_PASSWORD).status_code == 303
    assert client.get("/auth/session").get_json()["user"]["role"] == "editor"


def test_create_user_defaults_to_the_user_role(app: Flask) -> None:
    result = run(app, "create-user", "plain@example.com", input=f"{NEW_PASSWORD}\n" * 2)
    assert result.exit_code == 0, result.output
    user = stored_user(app, "plain@example.com")
    assert (user.role, user.name) == ("user", None)


@pytest.mark.parametrize("email", [USER[0], "USER@Example.COM", "  user@example.com "])
def test_create_user_refuses_a_taken_email_in_any_case(app: Flask, email: str) -> None:
    before = user_count(app)
    result = run(app, "create-user", email, input=f"{NEW_PASSWORD}\n" * 2)
    assert_clean_error(result, "Error:", "exists")
    assert user_count(app) == before
    assert sign_in(app.test_client(), *USER).status_code == 303  # the account is untouched


def test_emails_that_differ_only_by_accent_are_different_accounts(app: Flask) -> None:
    """Emails are stored normalised (NFKC, lower case) and compared exactly: the database's
    collation must not merge ``josé`` into ``jose`` (MariaDB's default one does)."""
    for email in ("jose@example.com", "josé@example.com"):
        result = run(app, "create-user", email, input=f"{NEW_PASSWORD}\n" * 2)
        assert result.exit_code == 0, result.output
    assert stored_user(app, "josé@example.com").email == "josé@example.com"
    assert stored_user(app, "jose@example.com").email == "jose@example.com"


def test_create_user_refuses_a_short_password(app: Flask) -> None:
    before = user_count(app)
    result = run(app, "create-user", "short@example.com", input="short\nshort\n")
    assert_clean_error(result, "Error:", "at least 12")
    assert user_count(app) == before


def test_create_user_refuses_an_overlong_password(app: Flask) -> None:
    long_password = "p" * 5000
    result = run(app, "create-user", "long@example.com", input=f"{long_password}\n" * 2)
    assert_clean_error(result, "Error:", "at most")
    assert long_password not in result.output
    assert stored_user(app, "long@example.com") is None


def test_create_user_repeats_the_question_when_the_passwords_differ(app: Flask) -> None:
    result = run(app, "create-user", "typo@example.com",
                 input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}x\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert stored_user(app, "typo@example.com") is not None


def test_create_user_gives_up_cleanly_when_the_passwords_never_match(app: Flask) -> None:
    result = run(app, "create-user", "typo@example.com",
                 input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}x\n")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert stored_user(app, "typo@example.com") is None


@pytest.mark.parametrize("email", ["not-an-email", "@example.com", "a b@example.com", "x@"])
def test_create_user_refuses_an_unusable_email(app: Flask, email: str) -> None:
    before = user_count(app)
    result = run(app, "create-user", email, input=f"{NEW_PASSWORD}\n" * 2)
    assert_clean_error(result, "Error:", "email")
    assert user_count(app) == before


def test_create_user_refuses_an_unusable_role(app: Flask) -> None:
    result = run(app, "create-user", "role@example.com", "--role", "r" * 65,
                 input=f"{NEW_PASSWORD}\n" * 2)
    assert_clean_error(result, "Error:", "role")
    assert stored_user(app, "role@example.com") is None


# -- set-role ---------------------------------------------------------------------------


def test_set_role_changes_the_role_and_live_sessions_see_it(app: Flask) -> None:
    client = browser(app, FIREFOX)
    assert client.get("/admin").status_code == 403
    result = run(app, "set-role", "User@Example.com", "admin")
    assert result.exit_code == 0, result.output
    assert "admin" in result.output
    assert stored_user(app, USER[0]).role == "admin"
    # Same process: both strategies apply it on the next request.
    assert client.get("/admin").status_code == 200
    assert client.get("/auth/session").get_json()["user"]["role"] == "admin"


def test_set_role_of_an_unknown_email_is_a_clean_error(app: Flask) -> None:
    result = run(app, "set-role", "nobody@example.com", "admin")
    assert_clean_error(result, "Error:", "nobody@example.com")


def test_set_role_refuses_an_empty_role(app: Flask) -> None:
    result = run(app, "set-role", USER[0], "")
    assert_clean_error(result, "Error:", "role")
    assert stored_user(app, USER[0]).role == "user"


# -- sessions and revoke ----------------------------------------------------------------


def test_sessions_lists_each_live_session_of_the_user(app: Flask) -> None:
    firefox = browser(app, FIREFOX)
    browser(app, IPHONE)
    browser(app, FIREFOX, who=ADMIN)
    ids = [s["id"] for s in firefox.get(
        "/auth/sessions", headers={"Accept": "application/json"}
    ).get_json()["sessions"]]
    result = run(app, "sessions", USER[0])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2
    assert sorted(line.split()[0] for line in lines) == sorted(ids)
    assert "Firefox on Linux" in result.output
    assert "Safari on iPhone" in result.output
    assert "127.0.0.1" in result.output


def test_sessions_says_so_when_there_are_none(app: Flask) -> None:
    result = run(app, "sessions", USER[0])
    assert result.exit_code == 0, result.output
    assert "no live sessions" in result.output


def test_sessions_of_an_unknown_email_is_a_clean_error(app: Flask) -> None:
    assert_clean_error(run(app, "sessions", "nobody@example.com"), "Error:", "nobody")


def test_revoke_ends_every_session_of_the_user(app: Flask) -> None:
    firefox = browser(app, FIREFOX)
    iphone = browser(app, IPHONE)
    admin = browser(app, FIREFOX, who=ADMIN)
    result = run(app, "revoke", "USER@example.com")
    assert result.exit_code == 0, result.output
    assert "ended 2 session(s)" in result.output
    assert not is_signed_in(firefox) and not is_signed_in(iphone)
    assert is_signed_in(admin)
    again = run(app, "revoke", USER[0])
    assert again.exit_code == 0 and "ended 0 session(s)" in again.output
    assert "no live sessions" in run(app, "sessions", USER[0]).output


def test_revoke_of_an_unknown_email_is_a_clean_error(app: Flask) -> None:
    assert_clean_error(run(app, "revoke", "nobody@example.com"), "Error:", "nobody")


# -- purge ------------------------------------------------------------------------------


def test_purge_deletes_ended_sessions_and_reports_the_count(app: Flask, strategy: str) -> None:
    needs_sql_registry(strategy)
    with time_machine.travel(datetime.now(UTC)) as traveller:
        browser(app, FIREFOX)  # will sit idle past its deadline
        revoked = browser(app, IPHONE)
        revoked.post("/auth/signout", data={"csrf_token": revoked.get(
            "/auth/csrf").get_json()["csrfToken"]})
        traveller.shift(timedelta(minutes=29))
        live = browser(app, FIREFOX, who=ADMIN)
        traveller.shift(timedelta(minutes=2))
        result = run(app, "purge")
        assert result.exit_code == 0, result.output
        # The idle session and the signed-out one; jwt revocation rows are still needed.
        assert "purged 2 row(s)" in result.output
        assert is_signed_in(live)
        again = run(app, "purge")
        assert again.exit_code == 0 and "purged 0 row(s)" in again.output
