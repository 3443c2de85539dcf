"""Two-factor authentication (SPEC §10): enrolment, TOTP codes accepted once within one step
of drift, single-use recovery codes, the sign-in lockout counting wrong codes, the secret
encrypted at rest (and still readable after a key rotation), and the routes of the 2FA
page. Real codes computed with pyotp; the clock moved with time-machine."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import segno
import time_machine
from flask import Flask
from helpers import (
    USER,
    build_app,
    cookie_name,
    csrf_token,
    db_of,
    guardian_of,
    session_cookie,
    sign_in,
    sign_in_ok,
)
from sqlalchemy import func, select

from flask_guardian import (
    InvalidCode,
    StorageUnavailable,
    TooManyAttempts,
    TwoFactorStateError,
    enrolment_generation,
    recovery_codes_left,
    signals,
    two_factor_enabled,
    verify_second_factor,
)
from flask_guardian.state import get_state
from flask_guardian.two_factor import tables
from flask_guardian.two_factor_enrolment import (
    admin_reset,
    begin_setup,
    disable,
    enable,
    regenerate_codes,
)

# Enrolments, codes and lockout counters are stored: the full database matrix.
pytestmark = pytest.mark.databases

def start() -> datetime:
    """A time to freeze the clock at: 5 seconds into a 30-second step (so "the next step"
    is 30 s away), a minute or so after the real time (sessions signed in before freezing
    stay live, and no token is issued before the real time)."""
    return datetime.fromtimestamp(int(time.time()) // 30 * 30 + 65, UTC)
IP = "203.0.113.7"


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def user_of(app: Flask, email: str = USER[0]) -> Any:
    model = guardian_of(app).user_model
    return db_of(app).session.execute(
        select(model).where(model.email == email)).scalar_one()


def enrol(app: Flask, email: str = USER[0]) -> tuple[str, list[str]]:
    """Turn 2FA on for ``email`` through the enrolment functions at the current (frozen)
    time; returns the secret and the recovery codes."""
    with app.app_context():
        state = get_state()
        user = user_of(app, email)
        setup = begin_setup(state, user, issuer="Test")
        codes = enable(state, user, code_at(setup.secret, datetime.now(UTC)))
    return setup.secret, codes


def verify(app: Flask, code: object, email: str = USER[0]) -> str:
    with app.app_context():
        return verify_second_factor(get_state(), user_of(app, email), code, client_ip=IP)


def enrolment_row(app: Flask) -> Any:
    table = tables(get_state(app)).enrolment.__table__
    with app.app_context():
        return db_of(app).session.execute(select(table)).one()


def failures(app: Flask) -> int:
    """Failed attempts counted for the user's email (SQL or Redis counters)."""
    with app.app_context():
        state = get_state()
        from flask_guardian.identifiers import lockout_key

        key = lockout_key(USER[0])
        redis = state.redis
        if redis is not None:
            value = redis.client.hget(state.settings.redis_prefix + "lock:" + key, "n")
            return int(value or 0)
        table = state.models.login_attempt.__table__
        row = db_of(app).session.execute(
            select(table.c.failures).where(table.c.key == key)).first()
        return int(row[0]) if row else 0


# -- enrolment ------------------------------------------------------------------------


def test_two_factor_is_on_only_once_a_current_code_confirms_the_setup(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False), app.app_context():
        state = get_state()
        user = user_of(app)
        assert not two_factor_enabled(state, user)
        assert enrolment_generation(state, user) is None
        setup = begin_setup(state, user, issuer="Test")
        assert setup.otpauth_url.startswith("otpauth://totp/Test:")
        assert "secret=" + setup.secret in setup.otpauth_url
        assert not two_factor_enabled(state, user)  # nothing enabled by the setup
        wrong = code_at(setup.secret, t0 + timedelta(minutes=5))
        with pytest.raises(InvalidCode):
            enable(state, user, wrong)
        assert not two_factor_enabled(state, user)
        codes = enable(state, user, code_at(setup.secret, t0))
        assert two_factor_enabled(state, user)
        assert isinstance(enrolment_generation(state, user), int)
        assert len(codes) == 10 and len(set(codes)) == 10
        assert recovery_codes_left(state, user) == 10
        with pytest.raises(TwoFactorStateError):
            begin_setup(state, user, issuer="Test")  # a second secret needs a disable first


def test_enable_without_a_setup_is_refused(make_app: Any) -> None:
    app = make_app()
    with app.app_context():
        state = get_state()
        with pytest.raises(TwoFactorStateError):
            enable(state, user_of(app), "123456")
        assert not two_factor_enabled(state, user_of(app))


# -- TOTP codes -----------------------------------------------------------------------


def test_a_code_is_accepted_once(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        # The code that confirmed the enrolment is spent already.
        with pytest.raises(InvalidCode):
            verify(app, code_at(secret, t0))
        clock.shift(30)
        code = code_at(secret, t0 + timedelta(seconds=30))
        assert verify(app, code) == "totp"
        with pytest.raises(InvalidCode):
            verify(app, code)  # replayed


def test_one_step_of_clock_drift_is_accepted_either_side(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        clock.shift(300)
        now = t0 + timedelta(seconds=300)
        with pytest.raises(InvalidCode):
            verify(app, code_at(secret, now - timedelta(seconds=60)))  # two steps behind
        assert verify(app, code_at(secret, now - timedelta(seconds=30))) == "totp"
        clock.shift(300)
        now += timedelta(seconds=300)
        with pytest.raises(InvalidCode):
            verify(app, code_at(secret, now + timedelta(seconds=60)))  # two steps ahead
        assert verify(app, code_at(secret, now + timedelta(seconds=30))) == "totp"
        # The step after "now" is used: the current code is now older, so a replay.
        with pytest.raises(InvalidCode):
            verify(app, code_at(secret, now))


def test_spaces_and_dashes_in_a_code_are_ignored(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        clock.shift(30)
        code = code_at(secret, t0 + timedelta(seconds=30))
        assert verify(app, f" {code[:3]} -{code[3:]} ") == "totp"


# -- recovery codes -------------------------------------------------------------------


def test_a_recovery_code_works_once_and_the_count_goes_down(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    used: list[int] = []

    def on_used(sender: Any, user: Any, remaining: int) -> None:
        used.append(remaining)

    with time_machine.travel(t0, tick=False):
        _, codes = enrol(app)
        with signals.recovery_code_used.connected_to(on_used, sender=app):
            # Typed in capitals with spaces for the dashes: the same code.
            assert verify(app, codes[0].upper().replace("-", " ")) == "recovery"
            with pytest.raises(InvalidCode):
                verify(app, codes[0])
            assert verify(app, codes[1]) == "recovery"
    assert used == [9, 8]
    with app.app_context():
        assert recovery_codes_left(get_state(), user_of(app)) == 8


def test_recovery_codes_are_stored_as_digests(make_app: Any) -> None:
    app = make_app()
    _, codes = enrol(app)
    table = tables(get_state(app)).recovery_code.__table__
    with app.app_context():
        stored = [r.code_hash for r in db_of(app).session.execute(select(table))]
    assert len(stored) == 10
    for code in codes:
        assert all(code.replace("-", "") not in h and code not in h for h in stored)


# -- lockout --------------------------------------------------------------------------


def test_wrong_codes_lock_the_account_like_wrong_passwords(make_app: Any) -> None:
    t0 = start()
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        clock.shift(30)
        for _ in range(3):
            with pytest.raises(InvalidCode):
                verify(app, "000000" if code_at(secret, t0 + timedelta(seconds=30)) != "000000"
                       else "111111")
        with pytest.raises(TooManyAttempts) as locked:
            verify(app, code_at(secret, t0 + timedelta(seconds=30)))  # right, but locked
        assert locked.value.retry_after > 0
        # The same counter as passwords: the right password is refused too.
        reply = sign_in(app.test_client(), *USER, json=True)
        assert reply.status_code == 429
        assert reply.get_json()["error"] == "too_many_attempts"


def test_wrong_passwords_lock_the_code_check_too(make_app: Any) -> None:
    t0 = start()
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=2)
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        client = app.test_client()
        for _ in range(2):
            reply = sign_in(client, USER[0], "not-the-password", json=True)
            assert reply.status_code == 401
        clock.shift(30)
        with pytest.raises(TooManyAttempts):
            verify(app, code_at(secret, t0 + timedelta(seconds=30)))


def test_a_right_code_clears_the_count(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        with pytest.raises(InvalidCode):
            verify(app, "abc")
        assert failures(app) == 1
        clock.shift(30)
        verify(app, code_at(secret, t0 + timedelta(seconds=30)))
        assert failures(app) == 0


BAD_CODES: list[object] = [
    "abcdef", "12345a", "1234567", "12345", "1" * 100_000, "12345\x00", "123\x00456",
    "\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits
    "١٢٣٤٥٦",  # Arabic-Indic digits
    "", None, 123456, ["123456"], {"code": "123456"}, "12 34 56 78",
]


def test_malformed_codes_are_refused_counted_and_write_nothing_else(make_app: Any) -> None:
    t0 = start()
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=100)
    with time_machine.travel(t0, tick=False):
        enrol(app)
        before = enrolment_row(app)
        with app.app_context():
            left = recovery_codes_left(get_state(), user_of(app))
        for bad in BAD_CODES:
            with pytest.raises(InvalidCode):
                verify(app, bad)
        assert failures(app) == len(BAD_CODES)
        assert enrolment_row(app) == before
        with app.app_context():
            assert recovery_codes_left(get_state(), user_of(app)) == left


def test_a_user_without_two_factor_has_no_valid_code(make_app: Any) -> None:
    app = make_app()
    with pytest.raises(InvalidCode):
        verify(app, "123456")
    assert failures(app) == 1


# -- the secret at rest ---------------------------------------------------------------


def test_the_secret_is_encrypted_at_rest(make_app: Any) -> None:
    app = make_app()
    secret, _ = enrol(app)
    row = enrolment_row(app)
    assert row.secret is not None and row.pending_secret is None
    assert secret not in row.secret and secret.lower() not in row.secret.lower()
    import base64

    assert secret.encode() not in base64.urlsafe_b64decode(row.secret[3:])
    # Another secret key cannot open it.
    other = build_app(app.config["SQLALCHEMY_DATABASE_URI"], app.config["SESSION_STRATEGY"],
                      **{**_store(app), "SECRET_KEY": "another-secret-key-0123456789"})
    later = datetime.now(UTC) + timedelta(seconds=30)
    with time_machine.travel(later, tick=False), pytest.raises(InvalidCode):
        verify(other, code_at(secret, later))


def _store(app: Flask) -> dict[str, Any]:
    keys = ("GUARDIAN_REDIS_URL", "GUARDIAN_REDIS_PREFIX")
    return {k: app.config[k] for k in keys if k in app.config}


def test_a_rotated_key_still_opens_the_secret_and_it_is_sealed_again(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        sealed = enrolment_row(app).secret
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        new_key = "the-new-secret-key-0123456789abcdef"
        rotated = build_app(url, app.config["SESSION_STRATEGY"], **_store(app),
                            SECRET_KEY=new_key,
                            SECRET_KEY_FALLBACKS=[app.config["SECRET_KEY"]])
        clock.shift(30)
        assert verify(rotated, code_at(secret, t0 + timedelta(seconds=30))) == "totp"
        resealed = enrolment_row(rotated).secret
        assert resealed != sealed
        # Sealed under the new key: the new key alone opens it now.
        alone = build_app(url, app.config["SESSION_STRATEGY"], **_store(app),
                          SECRET_KEY=new_key)
        clock.shift(30)
        assert verify(alone, code_at(secret, t0 + timedelta(seconds=60))) == "totp"


# -- disable, regenerate, admin reset ---------------------------------------------------


def test_generation_moves_on_every_change(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    seen = []
    with time_machine.travel(t0, tick=False):
        enrol(app)
        with app.test_request_context():
            state = get_state()
            user = user_of(app)
            seen.append(enrolment_generation(state, user))
            regenerate_codes(state, user, USER[1], client_ip=IP)
            seen.append(enrolment_generation(state, user))
            disable(state, user, USER[1], client_ip=IP)
            assert enrolment_generation(state, user) is None
        enrol(app)
        with app.app_context():
            seen.append(enrolment_generation(get_state(), user_of(app)))
    assert None not in seen and len(set(seen)) == 3


def test_admin_reset_turns_it_off_and_the_codes_die(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    with time_machine.travel(t0, tick=False):
        _, codes = enrol(app)
        with app.app_context():
            state = get_state()
            assert admin_reset(state, user_of(app))[0] is True
            assert not two_factor_enabled(state, user_of(app))
            assert recovery_codes_left(state, user_of(app)) == 0
        with pytest.raises(InvalidCode):
            verify(app, codes[0])
        table = tables(get_state(app)).enrolment.__table__
        with app.app_context():
            assert db_of(app).session.execute(
                select(func.count()).select_from(table).where(table.c.secret.is_not(None))
            ).scalar_one() == 0


# -- the routes -----------------------------------------------------------------------

JSON = {"Accept": "application/json"}


def post(client: Any, path: str, body: dict[str, Any] | None = None, *,
         form: bool = False) -> Any:
    """POST ``body`` to ``path`` as JSON (or as a browser form) with a valid CSRF token."""
    token = csrf_token(client)
    if form:
        return client.post(path, data={**(body or {}), "csrf_token": token})
    return client.post(path, json=body or {}, headers={"X-CSRF-Token": token})


def enrol_by_routes(client: Any, when: datetime) -> tuple[str, list[str]]:
    setup = post(client, "/auth/2fa/setup")
    assert setup.status_code == 200, setup.get_data(as_text=True)
    secret = setup.get_json()["secret"]
    reply = post(client, "/auth/2fa/enable", {"code": code_at(secret, when)})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return secret, reply.get_json()["recoveryCodes"]


def status(client: Any) -> Any:
    return client.get("/auth/2fa", headers=JSON).get_json()


def sign_in_with_code(client: Any, secret: str, when: datetime) -> None:
    """Sign ``USER`` in on ``client``: the password, then the code step (2FA is on)."""
    first = sign_in(client, *USER, json=True)
    assert first.get_json()["error"] == "two_factor_required", first.get_data(as_text=True)
    reply = post(client, "/auth/2fa/verify", {"code": code_at(secret, when)})
    assert reply.status_code == 200, reply.get_data(as_text=True)


def test_enrol_through_the_json_routes(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    client = app.test_client()
    sign_in_ok(client)
    with time_machine.travel(t0, tick=False):
        assert status(client) == {"enabled": False, "pending": False, "recoveryCodesLeft": 0}
        setup = post(client, "/auth/2fa/setup").get_json()
        assert set(setup) == {"secret", "otpauthUrl"}
        assert setup["otpauthUrl"].startswith("otpauth://totp/")
        assert status(client)["pending"] is True and status(client)["enabled"] is False
        wrong = post(client, "/auth/2fa/enable",
                     {"code": code_at(setup["secret"], t0 + timedelta(minutes=2))})
        assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_code"
        assert status(client)["enabled"] is False
        reply = post(client, "/auth/2fa/enable", {"code": code_at(setup["secret"], t0)})
        assert reply.status_code == 200
        body = reply.get_json()
        assert body["ok"] is True and len(set(body["recoveryCodes"])) == 10
        assert status(client) == {"enabled": True, "pending": False, "recoveryCodesLeft": 10}
        again = post(client, "/auth/2fa/setup")
        assert again.status_code == 409 and again.get_json()["error"] == "two_factor_state"


def test_enrol_through_the_html_page(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    client = app.test_client()
    sign_in_ok(client)
    with time_machine.travel(t0, tick=False):
        page = client.get("/auth/2fa").get_data(as_text=True)
        assert "Set up two-factor authentication" in page
        assert post(client, "/auth/2fa/setup", form=True).status_code == 303
        page = client.get("/auth/2fa").get_data(as_text=True)
        found = re.search(r'id="two-factor-secret">([A-Z2-7]+)<', page)
        assert found is not None
        secret = found.group(1)
        assert "<svg" in page and "<img" not in page and "<script" not in page
        # The QR code holds the otpauth URL: this secret, this account, the host as issuer.
        url = pyotp.TOTP(secret).provisioning_uri(name=USER[0], issuer_name="localhost")
        drawn = segno.make(url, error="m").svg_inline(
            dark="#000", light="#fff", omitsize=True, title="QR code for your authenticator app")
        assert drawn in page
        assert "http://" not in page.split("<svg", 1)[1].split("</svg>", 1)[0].replace(
            "http://www.w3.org/2000/svg", "")
        wrong = post(client, "/auth/2fa/enable", {"code": "000 000" if code_at(
            secret, t0) != "000000" else "111111"}, form=True)
        assert wrong.status_code == 401
        assert "The code is not valid" in wrong.get_data(as_text=True)
        assert secret in wrong.get_data(as_text=True)  # the form again, same secret
        shown = post(client, "/auth/2fa/enable", {"code": code_at(secret, t0)}, form=True)
        assert shown.status_code == 200
        text = shown.get_data(as_text=True)
        codes = re.findall(r"\b[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}\b", text)
        assert len(set(codes)) == 10
        assert 'download="recovery-codes.txt"' in text
        page = client.get("/auth/2fa").get_data(as_text=True)
        assert "10 recovery codes left" in page
        assert codes[0] not in page  # shown once


def test_enabling_ends_the_other_sessions_and_rotates_this_one(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    mine, other = app.test_client(), app.test_client()
    sign_in_ok(mine)
    sign_in_ok(other)
    before = session_cookie(mine, app)
    with time_machine.travel(t0, tick=False):
        assert mine.get("/auth/session").get_json()["twoFactor"] is False
        enrol_by_routes(mine, t0)
        assert session_cookie(mine, app) not in (None, before)
        assert mine.get("/api/me").status_code == 200
        # The rotated session passed a second factor (the code that enabled it).
        assert mine.get("/auth/session").get_json()["twoFactor"] is True
        assert other.get("/api/me", headers=JSON).status_code == 401
        # The old cookie of this browser is dead too.
        stale = app.test_client()
        stale.set_cookie(cookie_name(app), before or "")
        assert stale.get("/api/me", headers=JSON).status_code == 401


def test_disable_needs_the_password_and_ends_the_other_sessions(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    mine, other = app.test_client(), app.test_client()
    sign_in_ok(mine)
    disabled: list[str] = []
    with time_machine.travel(t0, tick=False):
        secret, _ = enrol_by_routes(mine, t0)
        # The enabling code spent this step: the next one (within the ±1 step of drift).
        sign_in_with_code(other, secret, t0 + timedelta(seconds=30))
        wrong = post(mine, "/auth/2fa/disable", {"password": "not-the-password"})
        assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_credentials"
        assert status(mine)["enabled"] is True
        assert other.get("/api/me").status_code == 200
        before = session_cookie(mine, app)
        with signals.two_factor_disabled.connected_to(
                lambda sender, user, by: disabled.append(by), sender=app):
            reply = post(mine, "/auth/2fa/disable", {"password": USER[1]})
        assert reply.status_code == 200 and reply.get_json() == {"ok": True}
        assert status(mine) == {"enabled": False, "pending": False, "recoveryCodesLeft": 0}
        assert session_cookie(mine, app) != before
        assert other.get("/api/me", headers=JSON).status_code == 401
    assert disabled == ["user"]


def test_new_recovery_codes_replace_the_old_ones(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    mine, other = app.test_client(), app.test_client()
    sign_in_ok(mine)
    with time_machine.travel(t0, tick=False):
        secret, old = enrol_by_routes(mine, t0)
        sign_in_with_code(other, secret, t0 + timedelta(seconds=30))
        wrong = post(mine, "/auth/2fa/recovery-codes", {"password": "not-the-password"})
        assert wrong.status_code == 401
        reply = post(mine, "/auth/2fa/recovery-codes", {"password": USER[1]})
        assert reply.status_code == 200
        new = reply.get_json()["recoveryCodes"]
        assert len(set(new)) == 10 and not set(new) & set(old)
        assert other.get("/api/me", headers=JSON).status_code == 401
        with pytest.raises(InvalidCode):
            verify(app, old[0])
        assert verify(app, new[0]) == "recovery"
        assert status(mine)["recoveryCodesLeft"] == 9


def test_two_factor_routes_need_a_signed_in_user(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    assert client.get("/auth/2fa", headers=JSON).status_code == 401
    assert client.get("/auth/2fa").status_code == 303  # to the sign-in page
    for path in ("/auth/2fa/setup", "/auth/2fa/enable", "/auth/2fa/disable",
                 "/auth/2fa/recovery-codes"):
        assert post(client, path, {"code": "123456", "password": USER[1]}).status_code == 401


def test_two_factor_posts_need_the_csrf_token(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    sign_in_ok(client)
    for path in ("/auth/2fa/setup", "/auth/2fa/enable", "/auth/2fa/disable",
                 "/auth/2fa/recovery-codes"):
        reply = client.post(path, json={"code": "123456", "password": USER[1]})
        assert reply.status_code == 403 and reply.get_json()["error"] == "csrf_failed"
    table = tables(get_state(app)).enrolment.__table__
    with app.app_context():
        assert db_of(app).session.execute(
            select(func.count()).select_from(table)).scalar_one() == 0


@pytest.mark.parametrize("field", ["code", "password"])
def test_bad_input_on_the_routes_is_a_4xx_and_changes_nothing(make_app: Any, field: str) -> None:
    t0 = start()
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=1000, GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=1000)
    client = app.test_client()
    sign_in_ok(client)
    with time_machine.travel(t0, tick=False):
        if field == "code":
            post(client, "/auth/2fa/setup")
            paths = ["/auth/2fa/enable"]
        else:
            enrol_by_routes(client, t0)
            paths = ["/auth/2fa/disable", "/auth/2fa/recovery-codes"]
        before = status(client)
        row = enrolment_row(app)
        for path in paths:
            for bad in BAD_CODES:
                reply = post(client, path, {field: bad})
                assert 400 <= reply.status_code < 500, (path, bad, reply.status_code)
                assert reply.get_json()["ok"] is False
            for raw in (b"[1, 2]", b"{", b"\x00", b'"code"'):
                reply = client.post(path, data=raw, headers={
                    "Content-Type": "application/json", "X-CSRF-Token": csrf_token(client)})
                assert reply.status_code == 400, (path, raw)
        assert status(client) == before
        assert enrolment_row(app) == row


def test_enable_and_disable_send_their_signals(make_app: Any) -> None:
    t0 = start()
    app = make_app()
    client = app.test_client()
    sign_in_ok(client)
    enabled: list[Any] = []
    with time_machine.travel(t0, tick=False), signals.two_factor_enabled.connected_to(
            lambda sender, user: enabled.append(user.email), sender=app):
        enrol_by_routes(client, t0)
    assert enabled == [USER[0]]


# -- the command line -----------------------------------------------------------------


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["guardian", *args])


def test_cli_status_says_off_then_on_with_the_codes_left(make_app: Any) -> None:
    app = make_app()
    result = run(app, "2fa-status", "User@Example.com")
    assert result.exit_code == 0, result.output
    assert "two-factor authentication is off" in result.output
    t0 = start()
    with time_machine.travel(t0, tick=False):
        _, codes = enrol(app)
        verify(app, codes[3])
        result = run(app, "2fa-status", USER[0])
    assert result.exit_code == 0, result.output
    assert "is on" in result.output and "9 recovery code(s) left" in result.output


def test_cli_reset_turns_it_off_and_ends_every_session(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    sign_in_ok(client)
    t0 = start()
    turned_off: list[str] = []
    with time_machine.travel(t0, tick=False):
        _, codes = enrol_by_routes(client, t0)
        assert client.get("/api/me").status_code == 200
        with signals.two_factor_disabled.connected_to(
                lambda sender, user, by: turned_off.append(by), sender=app):
            result = run(app, "2fa-reset", USER[0])
        assert result.exit_code == 0, result.output
        assert "turned off" in result.output and "ended 1 session(s)" in result.output
        assert client.get("/api/me", headers=JSON).status_code == 401
        with app.app_context():
            assert not two_factor_enabled(get_state(), user_of(app))
        with pytest.raises(InvalidCode):
            verify(app, codes[0])
        again = run(app, "2fa-reset", USER[0])
        assert again.exit_code == 0 and "already off" in again.output
    assert turned_off == ["admin"]


@pytest.mark.parametrize("command", ["2fa-status", "2fa-reset"])
def test_cli_unknown_email_is_a_clean_error(make_app: Any, command: str) -> None:
    result = run(make_app(), command, "nobody@example.com")
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "nobody@example.com" in result.output


def test_a_setup_left_for_an_hour_cannot_be_enabled(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    sign_in_ok(client)
    t0 = start()
    with time_machine.travel(t0, tick=False) as clock:
        secret = post(client, "/auth/2fa/setup").get_json()["secret"]
        for _ in range(3):  # an hour, with a request every 20 minutes (idle timeout: 30)
            clock.shift(1200)
            assert status(client)["enabled"] is False
        late = t0 + timedelta(seconds=3600)
        assert status(client)["pending"] is False
        reply = post(client, "/auth/2fa/enable", {"code": code_at(secret, late)})
        assert reply.status_code == 409 and "expired" in reply.get_json()["message"]
        assert status(client)["enabled"] is False
        # A new setup works.
        secret = post(client, "/auth/2fa/setup").get_json()["secret"]
        assert post(client, "/auth/2fa/enable",
                    {"code": code_at(secret, late)}).status_code == 200


# -- outages --------------------------------------------------------------------------


def test_a_database_outage_during_a_code_check_is_a_503_and_counts_nothing(
    make_proxied_app: Any, proxied_database: Any
) -> None:
    app = make_proxied_app()
    client = app.test_client()
    sign_in_ok(client)
    t0 = start()
    with time_machine.travel(t0, tick=False):
        secret, _ = enrol_by_routes(client, t0)
    proxy = proxied_database.proxy
    try:
        with time_machine.travel(t0 + timedelta(seconds=30), tick=False):
            token = csrf_token(client)
            with app.app_context():
                user = user_of(app)  # loaded before the outage
                proxy.refuse()
                with pytest.raises(StorageUnavailable):
                    verify_second_factor(get_state(), user, code_at(secret, datetime.now(UTC)),
                                         client_ip=IP)
            reply = client.post("/auth/2fa/disable", json={"password": USER[1]},
                                headers={"X-CSRF-Token": token})
            assert reply.status_code == 503 and reply.headers["Retry-After"]
    finally:
        proxy.restore()
    with time_machine.travel(t0 + timedelta(seconds=40), tick=False):
        assert failures(app) == 0
        assert verify(app, code_at(secret, t0 + timedelta(seconds=30))) == "totp"


def test_a_right_password_does_not_reset_the_count_of_wrong_codes(make_app: Any) -> None:
    """Otherwise whoever has the password could guess codes for ever: a few wrong codes,
    the password again (which clears the account's count), a few more codes, ..."""
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    t0 = start()
    with time_machine.travel(t0, tick=False) as clock:
        secret, _ = enrol(app)
        clock.shift(30)
        right = code_at(secret, t0 + timedelta(seconds=30))
        wrong = "000000" if right != "000000" else "111111"
        for _ in range(3):
            with pytest.raises(InvalidCode):
                verify(app, wrong)
            assert sign_in(app.test_client(), *USER, json=True).status_code == 200
        with pytest.raises(TooManyAttempts):
            verify(app, right)  # the 4th code after 3 wrong ones: past the limit of 3


def test_recovery_code_letters_misread_from_paper_are_read_as_meant() -> None:
    from flask_guardian.two_factor_codes import read_code

    assert read_code("0123-4567-89ab-cdef") == read_code("OI23 4567 89AB CDEF")
    assert read_code("l123-4567-89ab-cdef") == read_code("1123-4567-89ab-cdef")
    assert read_code("u123-4567-89ab-cdef") is None  # not in the alphabet


def test_wrong_codes_count_under_each_identifier_a_sign_in_can_use(make_app: Any) -> None:
    """With GUARDIAN_LOGIN_FIELDS = ["username", "email"] a password is counted under what
    was typed (auth.py: the identifier lower-cased); a wrong code counts under both."""
    import dataclasses
    from types import SimpleNamespace

    from flask_guardian.identifiers import lockout_key
    from flask_guardian.models import normalize_email
    from flask_guardian.two_factor import user_lockout_keys

    state = get_state(make_app())
    both = dataclasses.replace(
        state, settings=dataclasses.replace(state.settings, login_fields=("username", "email")))
    user = SimpleNamespace(id=7, email="ann@example.com", username=" Ann ")
    assert user_lockout_keys(both, user) == [
        lockout_key(normalize_email(" Ann ")), lockout_key("ann@example.com")]
    assert lockout_key(normalize_email(" Ann ")) == lockout_key("ann")
    assert user_lockout_keys(state, user) == [lockout_key("ann@example.com")]
