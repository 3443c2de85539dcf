"""The second step of a sign-in with two-factor authentication (SPEC §10): a correct
password of a 2FA user starts no session but a 5-minute pending state bound to that
browser; ``POST /auth/2fa/verify`` with a code (TOTP once, recovery code once) finishes it;
"trust this browser"; ``GUARDIAN_TWO_FACTOR_REQUIRED_ROLES``. Real codes from ``pyotp``,
the clock moved with ``time-machine``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pyotp
import pytest
import time_machine
from flask import Flask
from helpers import (
    ADMIN,
    READS_PER_REQUEST,
    USER,
    AppFactory,
    QueryCounter,
    cookie_attributes,
    cookie_name,
    csrf_token,
    db_of,
    guardian_of,
    set_cookie_headers,
    sign_in,
    sign_out,
)
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from flask_guardian import ConfigurationError, sign_in_user
from flask_guardian.config import load_settings

#: Sessions, lockout rows and trusted browsers are stored: every database.
pytestmark = pytest.mark.databases

START = datetime(2030, 5, 6, 9, 0, 0, tzinfo=UTC)
#: One TOTP time step: a code of the next step is a new code.
STEP = timedelta(seconds=30)


# -- builders of this file --------------------------------------------------------------


def post_json(client: Any, path: str, body: dict[str, Any] | None = None) -> Any:
    """A JSON POST with a fresh CSRF token in the header."""
    return client.post(path, json=body or {}, headers={"X-CSRF-Token": csrf_token(client)})


def enrol(client: Any) -> tuple[str, list[str]]:
    """Turn 2FA on for ``client``'s signed-in user through the routes; the secret and the
    recovery codes. The enabling code spends the current step: move the clock on a step
    before the next code."""
    setup = post_json(client, "/auth/2fa/setup")
    assert setup.status_code == 200, setup.get_data(as_text=True)
    secret = setup.get_json()["secret"]
    enable = post_json(client, "/auth/2fa/enable", {"code": pyotp.TOTP(secret).now()})
    assert enable.status_code == 200, enable.get_data(as_text=True)
    return secret, enable.get_json()["recoveryCodes"]


def verify(client: Any, code: Any, *, json: bool = False, trust: Any = None,
           token: str | None = None) -> Any:
    """POST /auth/2fa/verify with ``code`` (and the "trust this browser" box)."""
    token = token if token is not None else csrf_token(client)
    if json:
        body: dict[str, Any] = {"code": code, "csrfToken": token}
        if trust is not None:
            body["trust"] = trust
        return client.post("/auth/2fa/verify", json=body)
    form = {"code": code, "csrf_token": token}
    if trust is not None:
        form["trust"] = trust
    return client.post("/auth/2fa/verify", data=form)


def session_of(client: Any) -> dict[str, Any] | None:
    return client.get("/auth/session").get_json()  # type: ignore[no-any-return]


def pending_name(app: Flask) -> str:
    return cookie_name(app) + "-2fa"


def trust_name(app: Flask) -> str:
    return cookie_name(app) + "-2fa-trust"


class TwoFactorApp:
    """An app whose ``USER`` has 2FA on; the clock is at ``START`` plus a step or more."""

    def __init__(self, app: Flask, clock: Any, secret: str, codes: list[str]) -> None:
        self.app, self.clock, self.secret, self.codes = app, clock, secret, codes

    def code(self) -> str:
        """The current TOTP code."""
        return pyotp.TOTP(self.secret).now()

    def next_step(self) -> None:
        """Move the clock to the next TOTP step (the last code was spent)."""
        self.clock.shift(STEP)

    def client(self) -> Any:
        return self.app.test_client()


@pytest.fixture
def two_factor(make_app: AppFactory) -> Iterator[Any]:
    """``two_factor(routes=None, **config)``: a :class:`TwoFactorApp` (the clock stopped,
    moved on by hand); ``routes(app)`` adds the app's own views first."""
    with time_machine.travel(START, tick=False) as clock:

        def build(*, routes: Callable[[Flask], None] | None = None,
                  **config: Any) -> TwoFactorApp:
            app = make_app(**config)
            if routes is not None:  # the app's own views, added before its first request
                routes(app)
            client = app.test_client()
            assert sign_in(client, *USER).status_code == 303
            secret, codes = enrol(client)
            assert sign_out(client).status_code == 303
            clock.shift(STEP)
            return TwoFactorApp(app, clock, secret, codes)

        yield build


def users_rows(app: Flask, table: str) -> int:
    with app.app_context():
        db = db_of(app)
        return int(db.session.execute(
            select(db.func.count()).select_from(db.metadata.tables[table])).scalar_one())


# -- the password step ----------------------------------------------------------------


def test_a_correct_password_of_a_two_factor_user_starts_no_session(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    response = sign_in(client, *USER, json=True)
    assert response.status_code == 200
    assert response.get_json() == {"ok": False, "error": "two_factor_required"}
    assert set_cookie_headers(response, cookie_name(tf.app)) == []
    assert session_of(client) is None
    assert client.get("/dashboard").status_code == 303  # still anonymous
    (header,) = set_cookie_headers(response, pending_name(tf.app))
    attrs = cookie_attributes(header)
    assert "httponly" in attrs and attrs["samesite"] == "Lax" and attrs["max-age"] == "300"


def test_the_form_answers_a_correct_password_with_the_code_step(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    response = sign_in(client, *USER)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'name="code"' in page and 'autocomplete="one-time-code"' in page
    assert 'name="trust"' in page
    assert session_of(client) is None


def test_a_wrong_password_of_a_two_factor_user_is_the_usual_refusal(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    response = sign_in(client, USER[0], "wrong-password-123", json=True)
    assert response.status_code == 401
    assert response.get_json() == {"ok": False, "error": "invalid_credentials"}
    assert set_cookie_headers(response, pending_name(tf.app)) == []


def test_users_without_two_factor_sign_in_as_before_with_one_indexed_read_more(
    two_factor: Any,
) -> None:
    tf = two_factor()
    client = tf.client()
    csrf_token(client)
    with QueryCounter(tf.app) as queries:
        response = sign_in(client, *ADMIN)
    assert response.status_code == 303
    assert session_of(client) is not None
    assert session_of(client)["twoFactor"] is False  # type: ignore[index]
    two_factor_reads = [s for s in queries.statements if "guardian_two_factor" in s]
    assert len(two_factor_reads) == 1, two_factor_reads
    assert [s for s in queries.statements if "guardian_trusted_browsers" in s] == []


# -- the code step ----------------------------------------------------------------------


@pytest.mark.parametrize("json", [True, False])
def test_the_code_finishes_the_sign_in_with_two_factor(two_factor: Any, json: bool) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=json, redirect_url="/dashboard")
    response = verify(client, tf.code(), json=json)
    if json:
        assert response.status_code == 200
        body = response.get_json()
        assert body["ok"] is True and body["redirectUrl"] == "/dashboard"
        assert body["session"]["twoFactor"] is True
        assert body["session"]["user"]["email"] == USER[0]
    else:
        assert response.status_code == 303
        assert response.headers["Location"] == "/dashboard"
    assert client.get("/dashboard").status_code == 200
    assert session_of(client)["twoFactor"] is True  # type: ignore[index]
    # The pending cookie is cleared with the attributes it was set with.
    (cleared,) = set_cookie_headers(response, pending_name(tf.app))
    attrs = cookie_attributes(cleared)
    assert attrs["__value__"] == "" and "httponly" in attrs and attrs["path"] == "/"
    assert attrs["samesite"] == "Lax"


def test_codes_with_spaces_and_dashes_are_normalised(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER)
    code = tf.code()
    assert verify(client, f" {code[:3]} - {code[3:]} ").status_code == 303


def test_remember_me_from_the_password_step_is_kept(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=True, remember=True)
    response = verify(client, tf.code(), json=True)
    (header,) = set_cookie_headers(response, cookie_name(tf.app))
    assert "expires" in cookie_attributes(header)  # a remembered, persistent cookie


def test_a_replayed_code_is_refused(two_factor: Any) -> None:
    tf = two_factor()
    first = tf.client()
    code = tf.code()
    sign_in(first, *USER)
    assert verify(first, code).status_code == 303
    second = tf.client()
    sign_in(second, *USER, json=True)
    response = verify(second, code, json=True)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_code"
    assert session_of(second) is None
    tf.next_step()
    assert verify(second, tf.code(), json=True).status_code == 200  # a new code passes


def test_a_recovery_code_works_once_and_the_page_says_how_many_are_left(
    two_factor: Any,
) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, redirect_url="/dashboard")
    response = verify(client, tf.codes[0])
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "You have 9 recovery codes left" in page
    assert 'href="/dashboard"' in page
    assert session_of(client)["twoFactor"] is True  # type: ignore[index]

    other = tf.client()
    sign_in(other, *USER, json=True)
    refused = verify(other, tf.codes[0], json=True)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_code"
    done = verify(other, tf.codes[1], json=True)
    assert done.status_code == 200 and done.get_json()["recoveryCodesLeft"] == 8


def test_a_wrong_code_shows_the_form_again_and_keeps_the_pending_state(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER)
    response = verify(client, "000000" if tf.code() != "000000" else "111111")
    assert response.status_code == 401
    assert "The code is not valid" in response.get_data(as_text=True)
    assert session_of(client) is None
    assert verify(client, tf.code()).status_code == 303


def test_the_pending_state_lives_five_minutes(two_factor: Any) -> None:
    tf = two_factor()
    late, in_time = tf.client(), tf.client()
    sign_in(late, *USER, json=True)
    sign_in(in_time, *USER, json=True)
    tf.clock.shift(timedelta(seconds=299))
    assert verify(in_time, tf.code(), json=True).status_code == 200
    tf.clock.shift(timedelta(seconds=2))  # 301 seconds after the password
    tf.next_step()
    response = verify(late, tf.code(), json=True)
    assert response.status_code == 401
    assert response.get_json()["error"] == "no_pending_sign_in"
    assert session_of(late) is None


def test_a_pending_state_from_another_browser_does_nothing(two_factor: Any) -> None:
    tf = two_factor()
    victim, attacker = tf.client(), tf.client()
    sign_in(victim, *USER, json=True)
    stolen = victim.get_cookie(pending_name(tf.app)).value
    attacker.set_cookie(pending_name(tf.app), stolen)  # its own CSRF seed, not the victim's
    with QueryCounter(tf.app) as queries:
        response = verify(attacker, tf.code(), json=True)
    assert response.status_code == 401
    assert response.get_json()["error"] == "no_pending_sign_in"
    assert queries.writes == []  # not even counted
    assert session_of(attacker) is None
    assert verify(victim, tf.code(), json=True).status_code == 200  # the code was not spent


@pytest.mark.parametrize("forge", ["altered", "other_key", "garbage", "huge", "non_ascii"])
def test_a_forged_pending_state_does_nothing(two_factor: Any, forge: str) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=True)
    value = client.get_cookie(pending_name(tf.app)).value
    if forge == "altered":  # another user id, the signature of the old payload
        data = URLSafeTimedSerializer(b"x").loads_unsafe(value)[1]
        data["u"] = data["u"] - 1
        _, stamp, signature = value.rsplit(".", 2)
        payload = URLSafeTimedSerializer(b"x").dump_payload(data).decode()
        value = f"{payload}.{stamp}.{signature}"
    elif forge == "other_key":
        data = URLSafeTimedSerializer(b"x").loads_unsafe(value)[1]
        value = URLSafeTimedSerializer(b"another-secret-key-0123456789",
                                       salt="flask-guardian.two-factor-pending").dumps(data)
    elif forge == "garbage":
        value = "not.a.pending.value"
    elif forge == "huge":
        value = "a" * 2000
    else:
        value = "é" + value
    client.set_cookie(pending_name(tf.app), value)
    with QueryCounter(tf.app) as queries:
        response = verify(client, tf.code(), json=True)
    assert response.status_code == 401
    assert response.get_json()["error"] == "no_pending_sign_in"
    assert queries.writes == []
    assert session_of(client) is None


@pytest.mark.parametrize("json", [True, False])
def test_a_verify_without_a_pending_state_does_nothing(two_factor: Any, json: bool) -> None:
    tf = two_factor()
    client = tf.client()
    with QueryCounter(tf.app) as queries:
        response = verify(client, tf.code(), json=json)
    assert response.status_code == 401
    if json:
        assert response.get_json()["error"] == "no_pending_sign_in"
    else:
        assert "Sign in again" in response.get_data(as_text=True)
    assert queries.writes == []
    assert session_of(client) is None
    assert client.get("/auth/2fa/verify").status_code == 303  # back to the password


def test_without_csrf_checks_the_pending_state_is_still_bound_to_the_browser(
    two_factor: Any,
) -> None:
    tf = two_factor(GUARDIAN_CSRF_ENABLED=False)
    client, other = tf.client(), tf.client()
    first = client.post("/auth/signin", json={"email": USER[0], "password": USER[1]})
    assert first.get_json()["error"] == "two_factor_required"
    # No seed cookie was sent: the password step made one to bind the pending state to.
    assert client.get_cookie(cookie_name(tf.app) + "-csrf") is not None
    other.set_cookie(pending_name(tf.app), client.get_cookie(pending_name(tf.app)).value)
    assert other.post("/auth/2fa/verify", json={"code": tf.code()}).status_code == 401
    done = client.post("/auth/2fa/verify", json={"code": tf.code()})
    assert done.status_code == 200 and done.get_json()["session"]["twoFactor"] is True


def test_a_verify_needs_the_csrf_token(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=True)
    response = verify(client, tf.code(), json=True, token="forged.token")
    assert response.status_code == 403
    assert session_of(client) is None


def test_a_password_change_in_between_voids_the_pending_state(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=True)
    with tf.app.app_context():
        user = db_of(tf.app).session.execute(
            select(guardian_of(tf.app).user_model).filter_by(email=USER[0])).scalar_one()
        guardian_of(tf.app).set_password(user, "a-new-password-456")
    response = verify(client, tf.code(), json=True)
    assert response.status_code == 401 and session_of(client) is None


# -- the lockout ------------------------------------------------------------------------


def wrong(tf: TwoFactorApp) -> str:
    return "123456" if tf.code() != "123456" else "654321"


def test_wrong_codes_lock_the_account_like_wrong_passwords(two_factor: Any) -> None:
    tf = two_factor(GUARDIAN_MAX_LOGIN_ATTEMPTS=2)
    client = tf.client()
    sign_in(client, *USER, json=True)
    for _ in range(2):
        assert verify(client, wrong(tf), json=True).status_code == 401
    locked = verify(client, tf.code(), json=True)  # the third code: past the limit of 2
    assert locked.status_code == 429
    assert locked.headers["Retry-After"]
    assert session_of(client) is None


def test_the_password_again_buys_no_more_code_guesses(two_factor: Any) -> None:
    """The attack: guess codes, type the (stolen) password again to reset the count, guess
    again. The right password resets the password count, but wrong codes count on a
    counter of their own that only a right code resets (two_factor.code_lockout_key)."""
    tf = two_factor(GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    attacker = tf.client()
    for _ in range(3):
        assert sign_in(attacker, *USER, json=True).get_json()["error"] == "two_factor_required"
        assert verify(attacker, wrong(tf), json=True).status_code == 401
    assert sign_in(attacker, *USER, json=True).get_json()["error"] == "two_factor_required"
    response = verify(attacker, tf.code(), json=True)  # the fourth code, even the right one
    assert response.status_code == 429
    assert response.get_json()["error"] == "too_many_attempts"
    assert session_of(attacker) is None


def test_a_finished_sign_in_takes_its_attempts_back(two_factor: Any) -> None:
    tf = two_factor(GUARDIAN_MAX_LOGIN_ATTEMPTS=2)
    for _ in range(3):  # more sign-ins than the limit: each gives its count back
        client = tf.client()
        sign_in(client, *USER, json=True)
        assert verify(client, tf.code(), json=True).status_code == 200
        tf.next_step()


# -- trust this browser -----------------------------------------------------------------


def signed_in_with_trust(tf: TwoFactorApp) -> Any:
    client = tf.client()
    sign_in(client, *USER)
    response = verify(client, tf.code(), trust="1")
    assert response.status_code == 303
    tf.next_step()
    assert sign_out(client).status_code == 303
    return client


def test_a_trusted_browser_skips_the_code(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER)
    response = verify(client, tf.code(), trust="1")
    (header,) = set_cookie_headers(response, trust_name(tf.app))
    attrs = cookie_attributes(header)
    assert "httponly" in attrs and attrs["samesite"] == "Lax" and "expires" in attrs
    assert len(attrs["__value__"]) == 43  # 256 random bits
    sign_out(client)
    again = sign_in(client, *USER, json=True)
    assert again.status_code == 200 and again.get_json()["ok"] is True
    assert again.get_json()["session"]["twoFactor"] is True
    # The password is still needed, and another browser is still asked for a code.
    assert sign_in(client, USER[0], "wrong-password-123", json=True).status_code == 401
    assert sign_in(tf.client(), *USER, json=True).get_json()["error"] == "two_factor_required"


def test_a_trust_cookie_counts_only_for_the_user_who_trusted(two_factor: Any) -> None:
    tf = two_factor()
    admin = tf.client()
    assert sign_in(admin, *ADMIN).status_code == 303
    admin_secret, _ = enrol(admin)  # a second 2FA user
    sign_out(admin)
    tf.next_step()
    client = signed_in_with_trust(tf)  # trusted by USER
    with tf.app.app_context():  # the same generation number, so only the user tells them apart
        db = db_of(tf.app)
        table = db.metadata.tables["guardian_two_factor"]
        users = guardian_of(tf.app).user_model.__table__
        generations = dict(db.session.execute(
            select(users.c.email, table.c.generation).join(table, table.c.user_id == users.c.id)
        ).all())
        admin_id = db.session.execute(select(users.c.id).where(users.c.email == ADMIN[0])
                                      ).scalar_one()
        db.session.execute(table.update().where(table.c.user_id == admin_id)
                           .values(generation=generations[USER[0]]))
        db.session.commit()
    response = sign_in(client, *ADMIN, json=True)
    assert response.get_json() == {"ok": False, "error": "two_factor_required"}
    assert verify(client, pyotp.TOTP(admin_secret).now(), json=True).status_code == 200


def test_the_table_keeps_only_a_digest_of_the_trust_cookie(two_factor: Any) -> None:
    tf = two_factor()
    client = signed_in_with_trust(tf)
    token = client.get_cookie(trust_name(tf.app)).value
    with tf.app.app_context():
        db = db_of(tf.app)
        table = db.metadata.tables["guardian_trusted_browsers"]
        (stored,) = db.session.execute(select(table.c.token_hash)).scalars()
    assert token not in stored and len(stored) == 64


def test_trust_ends_after_the_configured_days(two_factor: Any) -> None:
    tf = two_factor(GUARDIAN_TWO_FACTOR_TRUST_DAYS=2)
    client = signed_in_with_trust(tf)
    tf.clock.shift(timedelta(days=2, seconds=1))
    client.set_cookie(trust_name(tf.app), client.get_cookie(trust_name(tf.app)).value)
    assert sign_in(client, *USER, json=True).get_json()["error"] == "two_factor_required"


def test_trusted_browsers_are_listed_and_revocable(two_factor: Any) -> None:
    tf = two_factor()
    client = signed_in_with_trust(tf)
    assert sign_in(client, *USER, json=True).get_json()["ok"] is True
    listing = client.get("/auth/sessions", headers={"Accept": "application/json"}).get_json()
    (trusted,) = listing["trustedBrowsers"]
    assert trusted["current"] is True and trusted["expires"]
    page = client.get("/auth/sessions").get_data(as_text=True)
    assert f'data-trusted-id="{trusted["id"]}"' in page and "Stop trusting" in page

    path = f"/auth/sessions/trusted/{trusted['id']}/revoke"
    forged = client.post(path, data={"csrf_token": "forged.token"})
    assert forged.status_code == 403
    assert users_rows(tf.app, "guardian_trusted_browsers") == 1
    response = client.post(path, data={"csrf_token": csrf_token(client)})
    assert response.status_code == 303
    assert users_rows(tf.app, "guardian_trusted_browsers") == 0
    (cleared,) = set_cookie_headers(response, trust_name(tf.app))
    assert cookie_attributes(cleared)["__value__"] == ""
    assert post_json(client, path).status_code == 404  # gone
    sign_out(client)
    assert sign_in(client, *USER, json=True).get_json()["error"] == "two_factor_required"


def test_another_user_cannot_revoke_a_trusted_browser(two_factor: Any) -> None:
    tf = two_factor()
    client = signed_in_with_trust(tf)
    assert sign_in(client, *USER, json=True).get_json()["ok"] is True
    listing = client.get("/auth/sessions", headers={"Accept": "application/json"}).get_json()
    browser_id = listing["trustedBrowsers"][0]["id"]
    admin = tf.client()
    assert sign_in(admin, *ADMIN).status_code == 303
    response = post_json(admin, f"/auth/sessions/trusted/{browser_id}/revoke")
    assert response.status_code == 404
    assert users_rows(tf.app, "guardian_trusted_browsers") == 1


@pytest.mark.parametrize("change", ["recovery-codes", "disable"])
def test_trust_is_void_once_the_enrolment_changes(two_factor: Any, change: str) -> None:
    tf = two_factor()
    client = signed_in_with_trust(tf)
    assert sign_in(client, *USER, json=True).get_json()["ok"] is True
    response = post_json(client, f"/auth/2fa/{change}", {"password": USER[1]})
    assert response.status_code == 200, response.get_data(as_text=True)
    if change == "recovery-codes":  # a new generation: the code is asked again
        sign_out(client)
        assert sign_in(client, *USER, json=True).get_json()["error"] == "two_factor_required"
    listing = client.get("/auth/sessions", headers={"Accept": "application/json"})
    if change == "disable":
        assert listing.get_json()["trustedBrowsers"] == []
        assert users_rows(tf.app, "guardian_trusted_browsers") == 0


def test_trust_days_zero_turns_trusting_off(two_factor: Any) -> None:
    tf = two_factor(GUARDIAN_TWO_FACTOR_TRUST_DAYS=0)
    client = tf.client()
    page = sign_in(client, *USER).get_data(as_text=True)
    assert 'name="trust"' not in page
    response = verify(client, tf.code(), trust="1")
    assert response.status_code == 303
    assert set_cookie_headers(response, trust_name(tf.app)) == []
    assert users_rows(tf.app, "guardian_trusted_browsers") == 0


# -- sign_in_user (an app's own login view) ---------------------------------------------


def test_sign_in_user_sends_a_two_factor_user_to_the_code_step(two_factor: Any) -> None:
    def routes(app: Flask) -> None:
        @app.post("/my-login")
        def my_login() -> Any:
            model = guardian_of(app).user_model
            user = db_of(app).session.execute(
                select(model).filter_by(email=USER[0])).scalar_one()
            result = sign_in_user(user, redirect_url="/dashboard")
            return {"ok": result.ok, "error": result.error}

    tf = two_factor(routes=routes)
    client = tf.client()
    csrf_token(client)  # the browser's CSRF seed, which the pending state is bound to
    assert client.post("/my-login").get_json() == {"ok": False,
                                                   "error": "two_factor_required"}
    assert session_of(client) is None
    assert 'name="code"' in client.get("/auth/2fa/verify").get_data(as_text=True)
    response = verify(client, tf.code())
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard"
    assert session_of(client)["twoFactor"] is True  # type: ignore[index]


# -- GUARDIAN_TWO_FACTOR_REQUIRED_ROLES -------------------------------------------------


def test_a_required_role_without_a_second_factor_is_sent_to_enrol(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_TWO_FACTOR_REQUIRED_ROLES=["admin"])
    client = app.test_client()
    with time_machine.travel(START, tick=False):
        assert sign_in(client, *ADMIN).status_code == 303
        response = client.get("/dashboard")
        assert response.status_code == 303 and response.headers["Location"] == "/auth/2fa"
        api = client.get("/api/me", headers={"Accept": "application/json"})
        assert api.status_code == 403
        assert api.get_json()["error"] == "two_factor_enrollment_required"
        assert client.get("/auth/2fa").status_code == 200  # the way out stays open
        assert session_of(client) is not None
        enrol(client)  # rotates the session into one that passed a second factor
        assert client.get("/dashboard").status_code == 200
        # Signing out stays possible for a user who will not enrol.
        other = app.test_client()
        assert sign_in(other, *ADMIN, json=True).get_json()["error"] == "two_factor_required"
        user = app.test_client()
        assert sign_in(user, *USER).status_code == 303
        assert user.get("/dashboard").status_code == 200  # a role not in the list


def test_a_required_role_can_still_sign_out(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_TWO_FACTOR_REQUIRED_ROLES=["admin"])
    client = app.test_client()
    assert sign_in(client, *ADMIN).status_code == 303
    assert client.get("/admin").status_code == 303
    assert sign_out(client).status_code == 303
    assert session_of(client) is None


def test_required_roles_cost_no_query_per_request(make_app: AppFactory, strategy: str) -> None:
    app = make_app(GUARDIAN_TWO_FACTOR_REQUIRED_ROLES=["admin"])
    client = app.test_client()
    assert sign_in(client, *ADMIN).status_code == 303
    client.get("/dashboard")
    with QueryCounter(app) as queries:
        for _ in range(10):
            assert client.get("/dashboard").status_code == 303
    assert queries.count == 10 * READS_PER_REQUEST[strategy]


@pytest.mark.parametrize(("key", "value"), [
    ("GUARDIAN_TWO_FACTOR_REQUIRED_ROLES", "admin"),
    ("GUARDIAN_TWO_FACTOR_REQUIRED_ROLES", [""]),
    ("GUARDIAN_TWO_FACTOR_REQUIRED_ROLES", ["admin", 3]),
    ("GUARDIAN_TWO_FACTOR_REQUIRED_ROLES", {"admin": True}),
    ("GUARDIAN_TWO_FACTOR_TRUST_DAYS", -1),
    ("GUARDIAN_TWO_FACTOR_TRUST_DAYS", "30"),
    ("GUARDIAN_TWO_FACTOR_TRUST_DAYS", True),
    ("GUARDIAN_TWO_FACTOR_TRUST_DAYS", 366),
])
def test_unusable_settings_fail_at_start_up_naming_the_key(key: str, value: Any) -> None:
    config = {"SECRET_KEY": "s" * 32, key: value}
    with pytest.raises(ConfigurationError) as info:
        load_settings(config)
    assert info.value.key == key


def test_the_settings_default_to_thirty_days_and_no_roles() -> None:
    settings = load_settings({"SECRET_KEY": "s" * 32}).second_factor
    assert settings.trust_days == 30 and settings.required_roles == frozenset()
    roles = load_settings({"SECRET_KEY": "s" * 32,
                           "GUARDIAN_TWO_FACTOR_REQUIRED_ROLES": ("admin", "ops")})
    assert roles.second_factor.required_roles == {"admin", "ops"}


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [["123456"], {"c": 1}, 123456, None, "12345a", "1234567",
                                  "12\x0034", "9" * 10_000, "", "   "])
def test_bad_codes_are_a_plain_refusal(two_factor: Any, code: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=True)
    response = verify(client, code, json=True)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_code"
    assert session_of(client) is None


@pytest.mark.parametrize("code", [["123456"], "12\x0034", "9" * 10_000])
def test_bad_codes_without_a_pending_state_write_nothing(two_factor: Any, code: Any) -> None:
    tf = two_factor()
    client = tf.client()
    with QueryCounter(tf.app) as queries:
        response = verify(client, code, json=True)
    assert response.status_code == 401
    assert queries.writes == []


@pytest.mark.parametrize("body", [[], "code", 7, {"code": "1", "trust": "maybe"},
                                  {"code": "1", "trust": [True]}])
def test_a_malformed_verify_body_is_a_400(two_factor: Any, body: Any) -> None:
    tf = two_factor()
    client = tf.client()
    sign_in(client, *USER, json=True)
    response = client.post("/auth/2fa/verify", json=body,
                           headers={"X-CSRF-Token": csrf_token(client)})
    assert response.status_code == 400
    assert session_of(client) is None


def test_revoking_a_trusted_browser_with_a_bad_id_is_a_404(two_factor: Any) -> None:
    tf = two_factor()
    client = tf.client()
    assert sign_in(client, *ADMIN).status_code == 303
    for bad in ("x" * 500, "' OR 1=1 --", "\x00", "0" * 32, "é"):
        response = post_json(client, f"/auth/sessions/trusted/{quote(bad)}/revoke")
        assert response.status_code == 404, bad
