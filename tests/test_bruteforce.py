"""Brute-force limits: ``GUARDIAN_MAX_LOGIN_ATTEMPTS`` failures for one email within
``GUARDIAN_LOCKOUT_DURATION`` lock that email (right password included) whether or not it
has an account, with identical answers; a success resets the count; the lock ends with the
window; ``GUARDIAN_IP_MAX_LOGIN_ATTEMPTS`` limits one client address. Both strategies,
every database."""

from __future__ import annotations

import json as json_module
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from helpers import ADMIN, BASE_CONFIG, USER, AppFactory, store_config

import flask_guardian
from flask_guardian import Guardian, TooManyAttempts
from flask_guardian.state import get_state

# The full database matrix: lockout rows and counters.
pytestmark = pytest.mark.databases

MAX_ATTEMPTS = 3
LOCKOUT = 600
LIMITS: dict[str, Any] = {
    "GUARDIAN_MAX_LOGIN_ATTEMPTS": MAX_ATTEMPTS,
    "GUARDIAN_LOCKOUT_DURATION": LOCKOUT,
}
UNKNOWN = "nobody@example.com"
WRONG = "wrong-password-000"
LOCKED_JSON = {"ok": False, "error": "too_many_attempts"}
FAILED_JSON = {"ok": False, "error": "invalid_credentials"}
T0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)


def attempt(client: Any, email: str, password: str, *, json: bool = True,
            ip: str = "127.0.0.1") -> Any:
    """One sign-in attempt from ``ip`` with a valid CSRF token."""
    environ = {"REMOTE_ADDR": ip}
    token = client.get("/auth/csrf", environ_base=environ).get_json()["csrfToken"]
    data = {"email": email, "password": password, "csrf_token": token}
    if json:
        return client.post("/auth/signin", json=data, environ_base=environ)
    return client.post("/auth/signin", data=data, environ_base=environ)


def fail(client: Any, email: str, times: int, **kwargs: Any) -> None:
    for _ in range(times):
        response = attempt(client, email, WRONG, **kwargs)
        assert response.status_code == 401, response.get_data(as_text=True)


def answer(response: Any, email: str) -> tuple[int, str, list[str]]:
    """What a client can observe, with the per-request CSRF nonce and the echoed email
    masked (they differ between any two requests)."""
    body = response.get_data(as_text=True)
    body = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value="*"', body)
    body = body.replace(f'value="{email}"', 'value="*"')
    return response.status_code, body, sorted(response.headers.getlist("Set-Cookie"))


def signed_in(client: Any) -> bool:
    return client.get("/auth/session").get_json() is not None


# -- lockout per email ------------------------------------------------------------------


def test_lockout_refuses_the_right_password_with_too_many_attempts(
    make_app: AppFactory,
) -> None:
    app = make_app(**LIMITS)
    client = app.test_client()
    fail(client, USER[0], MAX_ATTEMPTS)
    hasher = get_state(app).hasher
    before = hasher.hash_computations
    response = attempt(client, *USER)
    assert response.status_code == 429
    assert response.get_json() == LOCKED_JSON
    assert hasher.hash_computations == before  # a locked attempt costs no hash
    assert not signed_in(client)


def test_lockout_form_answer_is_429_with_the_generic_message(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    fail(client, USER[0], MAX_ATTEMPTS, json=False)
    response = attempt(client, *USER, json=False)
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)
    assert not signed_in(client)


def test_attempts_below_the_limit_are_not_locked(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    fail(client, USER[0], MAX_ATTEMPTS - 1)
    assert attempt(client, *USER).status_code == 200
    assert signed_in(client)


@pytest.mark.parametrize("json", [True, False], ids=["json", "form"])
def test_lockout_answers_are_identical_for_existing_and_unknown_emails(
    make_app: AppFactory, json: bool
) -> None:
    app = make_app(**LIMITS)
    answers: dict[str, list[tuple[int, str, list[str]]]] = {}
    for email in (USER[0], UNKNOWN):
        client = app.test_client()
        client.get("/auth/csrf")  # the CSRF seed cookie, so no attempt sets one
        answers[email] = [
            answer(attempt(client, email, WRONG, json=json), email)
            for _ in range(MAX_ATTEMPTS + 2)
        ]
    assert answers[USER[0]] == answers[UNKNOWN]
    statuses = [status for status, _, _ in answers[UNKNOWN]]
    assert statuses == [401] * MAX_ATTEMPTS + [429, 429]
    bodies = [body for _, body, _ in answers[UNKNOWN]]
    if json:
        assert [json_module.loads(b) for b in bodies] == (
            [FAILED_JSON] * MAX_ATTEMPTS + [LOCKED_JSON] * 2
        )
    else:
        assert "Too many failed attempts" in bodies[-1]
        assert "The email or password is incorrect." in bodies[0]


def test_lockout_counts_email_case_and_spacing_as_one(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    for variant in ("User@Example.com", " USER@example.COM ", "user@example.com")[:MAX_ATTEMPTS]:
        fail(client, variant, 1)
    response = attempt(client, *USER)
    assert response.status_code == 429


def test_lockout_of_one_email_leaves_others_alone(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    fail(client, USER[0], MAX_ATTEMPTS)
    assert attempt(client, *ADMIN).status_code == 200


def test_lockout_ends_after_the_lockout_duration(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    with time_machine.travel(T0, tick=False) as clock:
        fail(client, USER[0], MAX_ATTEMPTS)
        clock.move_to(T0 + timedelta(seconds=LOCKOUT - 1))
        assert attempt(client, *USER).status_code == 429
        clock.move_to(T0 + timedelta(seconds=LOCKOUT))
        response = attempt(client, *USER)
        assert response.status_code == 200
        assert response.get_json()["ok"] is True


def test_failures_after_the_window_start_a_new_count(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    with time_machine.travel(T0, tick=False) as clock:
        fail(client, USER[0], MAX_ATTEMPTS - 1)
        clock.move_to(T0 + timedelta(seconds=LOCKOUT))
        fail(client, USER[0], MAX_ATTEMPTS - 1)
        assert attempt(client, *USER).status_code == 200


def test_success_resets_the_failure_count(make_app: AppFactory) -> None:
    client = make_app(**LIMITS).test_client()
    fail(client, USER[0], MAX_ATTEMPTS - 1)
    assert attempt(client, *USER).status_code == 200
    fail(client, USER[0], MAX_ATTEMPTS - 1)
    # Without the reset this would be failure number 2 * (MAX_ATTEMPTS - 1) >= MAX_ATTEMPTS.
    assert attempt(client, *USER).status_code == 200


def test_python_api_reports_too_many_attempts(make_app: AppFactory) -> None:
    app = make_app(**LIMITS)
    fail(app.test_client(), USER[0], MAX_ATTEMPTS)
    with app.test_request_context("/", method="POST"):
        app.preprocess_request()
        result = flask_guardian.sign_in("credentials", email=USER[0], password=USER[1])
        assert not result.ok
        assert result.error == "too_many_attempts"
        assert result.session is None


def test_lockout_is_shared_by_every_process(
    make_app: AppFactory, database_url: str, strategy: str
) -> None:
    first = make_app(**LIMITS)
    # A second process: its own app, engine and Guardian on the same database.
    second = Flask("guardian_second_process")
    second.config.update(BASE_CONFIG, **LIMITS)
    second.config.update(SQLALCHEMY_DATABASE_URI=database_url, SESSION_STRATEGY=strategy,
                         **store_config(first))
    db = SQLAlchemy(second)
    Guardian(second, db=db)
    try:
        fail(first.test_client(), USER[0], MAX_ATTEMPTS)
        response = attempt(second.test_client(), *USER)
        assert response.status_code == 429
        assert response.get_json() == LOCKED_JSON
    finally:
        with second.app_context():
            db.engine.dispose()


# -- limit per client IP ----------------------------------------------------------------


def test_ip_limit_refuses_every_email_from_that_address(make_app: AppFactory) -> None:
    client = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=3, GUARDIAN_MAX_LOGIN_ATTEMPTS=100
                      ).test_client()
    attacker = "203.0.113.7"
    for n in range(3):
        response = attempt(client, f"guess{n}@example.com", WRONG, ip=attacker)
        assert response.status_code == 401
    response = attempt(client, *ADMIN, ip=attacker)
    assert response.status_code == 429
    assert response.get_json() == LOCKED_JSON
    assert not signed_in(client)
    # Another address is not affected, for the same account.
    assert attempt(client, *ADMIN, ip="198.51.100.2").status_code == 200


def test_success_takes_back_one_attempt_of_the_address_not_all(make_app: AppFactory) -> None:
    """A success takes back its own attempt from the address count (an office behind one
    NAT is not locked by its own users) but does not reset what other emails tried from
    there: with a limit of 3, two failures and a success leave exactly one attempt. A
    reset would leave three; no release, none."""
    client = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=3, GUARDIAN_MAX_LOGIN_ATTEMPTS=100
                      ).test_client()
    office = "203.0.113.9"
    for n in range(2):
        assert attempt(client, f"typo{n}@example.com", WRONG, ip=office).status_code == 401
    assert attempt(client, *USER, ip=office).status_code == 200  # counted 3, then 2
    assert attempt(client, "typo2@example.com", WRONG, ip=office).status_code == 401  # 3
    response = attempt(client, "typo3@example.com", WRONG, ip=office)  # 4 > 3
    assert response.status_code == 429
    assert response.get_json() == LOCKED_JSON
    assert attempt(client, *ADMIN, ip=office).status_code == 429
    assert attempt(client, *ADMIN, ip="198.51.100.2").status_code == 200


def test_ip_lock_ends_after_the_lockout_duration(make_app: AppFactory) -> None:
    client = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=3, GUARDIAN_MAX_LOGIN_ATTEMPTS=100,
                      GUARDIAN_LOCKOUT_DURATION=LOCKOUT).test_client()
    attacker = "203.0.113.7"
    with time_machine.travel(T0, tick=False) as clock:
        for n in range(3):
            attempt(client, f"guess{n}@example.com", WRONG, ip=attacker)
        assert attempt(client, *USER, ip=attacker).status_code == 429
        clock.move_to(T0 + timedelta(seconds=LOCKOUT))
        assert attempt(client, *USER, ip=attacker).status_code == 200


def test_ip_limit_answer_does_not_reveal_which_emails_exist(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=2, GUARDIAN_MAX_LOGIN_ATTEMPTS=100)
    client = app.test_client()
    client.get("/auth/csrf")
    attacker = "203.0.113.7"
    fail(client, UNKNOWN, 2, ip=attacker)
    known = answer(attempt(client, USER[0], WRONG, ip=attacker), USER[0])
    unknown = answer(attempt(client, UNKNOWN, WRONG, ip=attacker), UNKNOWN)
    assert known == unknown
    assert known[0] == 429


def parallel_attempts(app: Flask, email: str, parallel: int) -> list[int]:
    """``parallel`` wrong-password attempts for ``email`` released at the same instant;
    their statuses (500 for one that raised)."""
    clients = [app.test_client() for _ in range(parallel)]
    tokens = [c.get("/auth/csrf").get_json()["csrfToken"] for c in clients]
    barrier = threading.Barrier(parallel)
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(client: Any, token: str) -> None:
        data = {"email": email, "password": WRONG, "csrf_token": token}
        with app.app_context():
            barrier.wait()
            try:
                status = client.post("/auth/signin", json=data).status_code
            except Exception:  # what a server would turn into a 500
                status = 500
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=guess, args=pair)
               for pair in zip(clients, tokens, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def test_parallel_attempts_cannot_exceed_the_limit(make_app: AppFactory) -> None:
    """Attempts fired together must not all pass the check before any failure is counted
    (a race would let a parallel guesser exceed the limit)."""
    app = make_app(**LIMITS)
    statuses = parallel_attempts(app, USER[0], 8)
    assert statuses == [401] * MAX_ATTEMPTS + [429] * (8 - MAX_ATTEMPTS)


def test_parallel_first_attempts_for_new_emails_never_fail(make_app: AppFactory) -> None:
    """The first attempts for an email create its counter; racing to create it must end
    in a count for each, never in a database error (a deadlock would be a 500)."""
    app = make_app(**LIMITS)
    rounds = [parallel_attempts(app, f"target{n}@example.com", 10) for n in range(10)]
    assert rounds == [[401] * MAX_ATTEMPTS + [429] * (10 - MAX_ATTEMPTS)] * 10


def test_ipv6_limit_counts_the_whole_slash_64(make_app: AppFactory) -> None:
    """One IPv6 host holds 2**64 addresses: the per-address limit counts its /64."""
    app = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=3, GUARDIAN_MAX_LOGIN_ATTEMPTS=100)
    client = app.test_client()
    for n in range(3):
        assert attempt(client, f"guess{n}@example.com", WRONG,
                       ip=f"2001:db8::{n}").status_code == 401
    assert attempt(client, *USER, ip="2001:db8::ff").status_code == 429
    assert attempt(client, *USER, ip="2001:db8:0:1::1").status_code == 200  # another /64


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # IPv4 clients seen through a dual-stack socket ([::]): each is its own address.
        ("::ffff:203.0.113.7", "::ffff:198.51.100.2"),
        # Loopback is not the /64 of anything else.
        ("::1", "::ffff:203.0.113.7"),
    ],
)
def test_ipv4_clients_on_a_dual_stack_socket_are_counted_apart(
    make_app: AppFactory, first: str, second: str
) -> None:
    """Behind ``gunicorn -b [::]:80`` every IPv4 client arrives as ``::ffff:a.b.c.d``: one
    noisy host must not lock sign-in for every other one."""
    app = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=3, GUARDIAN_MAX_LOGIN_ATTEMPTS=100)
    client = app.test_client()
    for n in range(3):
        assert attempt(client, f"guess{n}@example.com", WRONG, ip=first).status_code == 401
    assert attempt(client, *USER, ip=first).status_code == 429
    assert attempt(client, *USER, ip=second).status_code == 200


def test_an_ipv4_mapped_address_counts_as_its_ipv4_address(make_app: AppFactory) -> None:
    """The same IPv4 client over IPv4 and through a dual-stack socket is one counter."""
    app = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=3, GUARDIAN_MAX_LOGIN_ATTEMPTS=100)
    client = app.test_client()
    attempt(client, "guess0@example.com", WRONG, ip="203.0.113.7")
    attempt(client, "guess1@example.com", WRONG, ip="::ffff:203.0.113.7")
    attempt(client, "guess2@example.com", WRONG, ip="203.0.113.7")
    assert attempt(client, *USER, ip="::ffff:203.0.113.7").status_code == 429


def test_lockout_answers_carry_retry_after(make_app: AppFactory) -> None:
    """A 429 says when to come back (RFC 9110 Retry-After, in seconds) and the page says how
    long to wait."""
    app = make_app(**LIMITS)
    client = app.test_client()
    with time_machine.travel(T0, tick=False) as clock:
        fail(client, USER[0], MAX_ATTEMPTS)
        clock.move_to(T0 + timedelta(seconds=100))
        response = attempt(client, *USER)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == str(LOCKOUT - 100)
        form = attempt(client, *USER, json=False)
        assert form.status_code == 429
        assert form.headers["Retry-After"] == str(LOCKOUT - 100)
        assert "Try again in 9 minutes" in form.get_data(as_text=True)


# -- guardian.authenticate, for an application's own sign-in form ------------------------


def test_authenticate_counts_toward_the_same_lockout_then_raises(make_app: AppFactory) -> None:
    app = make_app(**LIMITS)
    guardian = app.extensions["guardian"]
    with app.test_request_context("/", method="POST"):
        for _ in range(MAX_ATTEMPTS):
            assert guardian.authenticate(USER[0], WRONG) is None
        with pytest.raises(TooManyAttempts) as caught:
            guardian.authenticate(*USER)  # the right password, refused
    assert caught.value.code == "too_many_attempts"
    assert 1 <= caught.value.retry_after <= LOCKOUT
    # One count with the sign-in route, both ways.
    assert attempt(app.test_client(), *USER).get_json() == LOCKED_JSON


def test_authenticate_is_locked_by_failures_on_the_sign_in_route(make_app: AppFactory) -> None:
    app = make_app(**LIMITS)
    fail(app.test_client(), UNKNOWN, MAX_ATTEMPTS)
    with app.test_request_context("/", method="POST"), pytest.raises(TooManyAttempts):
        app.extensions["guardian"].authenticate(UNKNOWN, WRONG)


def test_authenticate_success_resets_the_count(make_app: AppFactory) -> None:
    app = make_app(**LIMITS)
    guardian = app.extensions["guardian"]
    with app.test_request_context("/", method="POST"):
        for _ in range(2):
            for _ in range(MAX_ATTEMPTS - 1):
                assert guardian.authenticate(USER[0], WRONG) is None
            assert guardian.authenticate(*USER).email == USER[0]


def test_authenticate_applies_the_per_address_limit(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=2)
    guardian = app.extensions["guardian"]
    near = {"REMOTE_ADDR": "203.0.113.9"}
    with app.test_request_context("/", method="POST", environ_base=near):
        for n in range(2):
            assert guardian.authenticate(f"guess{n}@example.com", WRONG) is None
        with pytest.raises(TooManyAttempts):
            guardian.authenticate(*USER)
    with app.test_request_context("/", method="POST",
                                  environ_base={"REMOTE_ADDR": "198.51.100.7"}):
        assert guardian.authenticate(*USER).email == USER[0]


def test_an_uncaught_lockout_in_an_apps_own_view_is_429_with_retry_after(
    make_app: AppFactory,
) -> None:
    app = make_app(**LIMITS)

    @app.post("/my-login")
    def my_login() -> str:
        user = app.extensions["guardian"].authenticate(request.form["email"],
                                                       request.form["password"])
        return "welcome" if user is not None else "no"

    client = app.test_client()
    for _ in range(MAX_ATTEMPTS):
        assert client.post("/my-login", data={"email": USER[0], "password": WRONG}
                           ).get_data(as_text=True) == "no"
    response = client.post("/my-login", data={"email": USER[0], "password": USER[1]})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    response = client.post("/my-login", data={"email": USER[0], "password": USER[1]},
                           headers={"Accept": "application/json"})
    assert response.status_code == 429
    assert response.get_json()["error"] == "too_many_attempts"
