"""Password checks: unknown email, wrong password and inactive user cost one hash each and
get the same answer; bcrypt and weaker argon2 hashes are upgraded to the configured
argon2id on the next sign-in; passwords over the maximum are refused without hashing; a
password bcrypt cannot take is a plain refusal. Both strategies, every database.

Hash costs are asserted by count (``hasher.hash_computations``), never by time."""

from __future__ import annotations

import re
from typing import Any

import argon2
import bcrypt
import pytest
from flask import Flask
from helpers import ADMIN, USER, AppFactory, db_of, guardian_of, sign_in, sign_in_ok
from sqlalchemy import select, update

from flask_guardian.state import get_state

# The full database matrix: password hashes read and upgraded in the users table.
pytestmark = pytest.mark.databases

INACTIVE = ("inactive@example.com", "inactive-password-123")
FAILED_JSON = {"ok": False, "error": "invalid_credentials"}


def hasher_of(app: Flask) -> Any:
    return get_state(app).hasher


def stored_hash(app: Flask, email: str) -> str:
    with app.app_context():
        users = guardian_of(app).user_model.__table__
        value = db_of(app).session.execute(
            select(users.c.password_hash).where(users.c.email == email)
        ).scalar_one()
    return str(value)


def store_hash(app: Flask, email: str, password_hash: str) -> None:
    """Replace a user's hash with Core SQL, as a migration from another system would."""
    with app.app_context():
        users = guardian_of(app).user_model.__table__
        db_of(app).session.execute(
            update(users).where(users.c.email == email).values(password_hash=password_hash)
        )
        db_of(app).session.commit()


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=4)).decode("ascii")


def answer(response: Any, email: str) -> tuple[int, str, list[str]]:
    """What a client observes, with the per-request CSRF nonce and echoed email masked."""
    body = response.get_data(as_text=True)
    body = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value="*"', body)
    body = body.replace(f'value="{email}"', 'value="*"')
    return response.status_code, body, sorted(response.headers.getlist("Set-Cookie"))


def costed_attempt(app: Flask, email: str, password: str, *, json: bool) -> tuple[Any, int]:
    """A sign-in from a fresh client: its observable answer and how many hashes it cost."""
    client = app.test_client()
    client.get("/auth/csrf")
    hasher = hasher_of(app)
    before = hasher.hash_computations
    response = sign_in(client, email, password, json=json)
    cost = hasher.hash_computations - before
    assert client.get("/auth/session").get_json() is None
    return answer(response, email), cost


def app_with_inactive_user(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(**config)
    with app.app_context():
        user = guardian_of(app).create_user(*INACTIVE)
        user.is_active = False
        db_of(app).session.commit()
    return app


# -- same answer, same cost -------------------------------------------------------------


@pytest.mark.parametrize("json", [True, False], ids=["json", "form"])
def test_unknown_email_wrong_password_and_inactive_user_look_the_same(
    make_app: AppFactory, json: bool
) -> None:
    app = app_with_inactive_user(make_app)
    cases = {
        "unknown email": ("nobody@example.com", USER[1]),
        "wrong password": (USER[0], "wrong-password-000"),
        "inactive user, right password": INACTIVE,
    }
    results = {name: costed_attempt(app, *creds, json=json) for name, creds in cases.items()}
    answers = {name: result[0] for name, result in results.items()}
    costs = {name: result[1] for name, result in results.items()}
    assert costs == dict.fromkeys(cases, 1)
    first = answers["unknown email"]
    assert answers == dict.fromkeys(cases, first)
    assert first[0] == 401
    if json:
        assert first[1].strip().replace(" ", "") == '{"error":"invalid_credentials","ok":false}'
    else:
        assert "The email or password is incorrect." in first[1]


class CountingContext:
    """Wraps the hasher's CryptContext and counts the hash computations it really makes,
    independently of the package's own counter."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def hash(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.hash(*args, **kwargs)

    def verify(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.verify(*args, **kwargs)

    def verify_and_update(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.verify_and_update(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "email, password",
    [("nobody@example.com", USER[1]), (USER[0], "wrong-password-000"), INACTIVE],
    ids=["unknown-email", "wrong-password", "inactive-user"],
)
def test_first_failed_sign_in_of_a_process_makes_exactly_one_hash_computation(
    make_app: AppFactory, email: str, password: str
) -> None:
    app = app_with_inactive_user(make_app)
    counting = CountingContext(hasher_of(app).context)
    hasher_of(app).context = counting
    client = app.test_client()
    client.get("/auth/csrf")
    response = sign_in(client, email, password, json=True)
    assert response.get_json() == FAILED_JSON
    assert counting.calls == 1


def test_right_password_costs_one_hash(app: Flask) -> None:
    hasher = hasher_of(app)
    client = app.test_client()
    client.get("/auth/csrf")
    before = hasher.hash_computations
    sign_in_ok(client, USER)
    assert hasher.hash_computations - before == 1


def test_authenticate_costs_one_hash_whatever_the_outcome(make_app: AppFactory) -> None:
    app = app_with_inactive_user(make_app)
    hasher = hasher_of(app)
    with app.app_context():
        guardian = guardian_of(app)
        for email, password, found in (
            ("nobody@example.com", "whatever-password", False),
            (USER[0], "wrong-password-000", False),
            (*INACTIVE, False),
            (*USER, True),
        ):
            before = hasher.hash_computations
            user = guardian.authenticate(email, password)
            assert (user is not None) == found, email
            assert hasher.hash_computations - before == 1, email


# -- upgrades ---------------------------------------------------------------------------


def test_bcrypt_hash_is_upgraded_to_argon2id_on_sign_in(app: Flask) -> None:
    store_hash(app, USER[0], bcrypt_hash(USER[1]))
    assert stored_hash(app, USER[0]).startswith("$2b$")
    hasher = hasher_of(app)
    before = hasher.hash_computations
    sign_in_ok(app.test_client(), USER)
    assert hasher.hash_computations - before == 2  # the check, then the new hash
    upgraded = stored_hash(app, USER[0])
    assert upgraded.startswith("$argon2id$")
    sign_in_ok(app.test_client(), USER)  # the new hash verifies
    assert stored_hash(app, USER[0]) == upgraded  # and is not rewritten again


def test_wrong_password_does_not_upgrade_a_bcrypt_hash(app: Flask) -> None:
    old = bcrypt_hash(USER[1])
    store_hash(app, USER[0], old)
    response = sign_in(app.test_client(), USER[0], "wrong-password-000", json=True)
    assert response.get_json() == FAILED_JSON
    assert stored_hash(app, USER[0]) == old


def test_hash_upgrade_does_not_end_the_users_other_sessions(app: Flask) -> None:
    other = app.test_client()
    sign_in_ok(other, USER)
    store_hash(app, USER[0], bcrypt_hash(USER[1]))
    sign_in_ok(app.test_client(), USER)
    assert stored_hash(app, USER[0]).startswith("$argon2id$")
    assert other.get("/dashboard").status_code == 200


WEAK_ARGON2 = {
    # name: (argon2-cffi parameters of the stored hash, app config)
    "lower memory": ({"memory_cost": 512, "time_cost": 1}, {}),
    "lower time": ({"memory_cost": 1024, "time_cost": 1}, {"GUARDIAN_ARGON2_TIME_COST": 2}),
    "argon2i": (
        {"memory_cost": 1024, "time_cost": 1, "type": argon2.Type.I}, {}
    ),
}


@pytest.mark.parametrize("weakness", sorted(WEAK_ARGON2))
def test_weaker_argon2_hash_is_upgraded_to_the_configured_parameters(
    make_app: AppFactory, weakness: str
) -> None:
    params, config = WEAK_ARGON2[weakness]
    app = make_app(**config)
    settings = get_state(app).settings
    weak = argon2.PasswordHasher(parallelism=1, **params).hash(USER[1])
    store_hash(app, USER[0], weak)
    sign_in_ok(app.test_client(), USER)
    upgraded = stored_hash(app, USER[0])
    expected = (
        f"$argon2id$v=19$m={settings.argon2_memory_cost},t={settings.argon2_time_cost},"
        f"p={settings.argon2_parallelism}$"
    )
    assert upgraded.startswith(expected), upgraded
    sign_in_ok(app.test_client(), USER)


def test_current_argon2_hash_is_not_rewritten(app: Flask) -> None:
    before = stored_hash(app, USER[0])
    sign_in_ok(app.test_client(), USER)
    assert stored_hash(app, USER[0]) == before


# -- length limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["x" * 65, "\u20ac" * 22],  # 65 bytes; 22 characters but 66 bytes of UTF-8
    ids=["ascii", "multibyte"],
)
def test_password_over_max_length_is_refused_without_hashing(
    make_app: AppFactory, password: str
) -> None:
    app = make_app(GUARDIAN_PASSWORD_MAX_LENGTH=64)
    (status, body, cookies), cost = costed_attempt(app, USER[0], password, json=True)
    assert cost == 0
    assert (status, body.strip().replace(" ", "")) == (
        401, '{"error":"invalid_credentials","ok":false}'
    )
    assert cookies == []


def test_password_at_max_length_is_checked(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_PASSWORD_MAX_LENGTH=64)
    _, cost = costed_attempt(app, USER[0], "x" * 64, json=True)
    assert cost == 1


def test_huge_password_is_refused_without_hashing_never_500(app: Flask) -> None:
    for json in (True, False):
        (status, _, _), cost = costed_attempt(app, USER[0], "p" * 200_000, json=json)
        assert status == 401
        assert cost == 0


def test_set_password_refuses_a_password_over_max_length_without_hashing(app: Flask) -> None:
    hasher = hasher_of(app)
    with app.app_context():
        users = guardian_of(app).user_model
        user = db_of(app).session.execute(
            select(users).where(users.email == USER[0])
        ).scalar_one()
        before = hasher.hash_computations
        with pytest.raises(ValueError, match="at most"):
            guardian_of(app).set_password(user, "y" * 2000)
        assert hasher.hash_computations == before
    sign_in_ok(app.test_client(), USER)  # the old password still works


# -- bcrypt's 72-byte limit -------------------------------------------------------------

PASSWORD_72 = "correct-horse-battery-staple-" + "z" * 43  # exactly 72 bytes


@pytest.mark.parametrize(
    "attempted",
    [PASSWORD_72 + "!", "w" * 100, "\u00e9" * 40],  # 73, 100 and 80 bytes
    ids=["matching-prefix", "ascii", "multibyte"],
)
def test_password_over_72_bytes_against_bcrypt_hash_is_a_plain_refusal(
    app: Flask, attempted: str
) -> None:
    assert len(PASSWORD_72.encode()) == 72
    store_hash(app, USER[0], bcrypt_hash(PASSWORD_72))
    client = app.test_client()
    response = sign_in(client, USER[0], attempted, json=True)
    assert response.status_code == 401
    assert response.get_json() == FAILED_JSON
    assert client.get("/auth/session").get_json() is None
    sign_in_ok(app.test_client(), (USER[0], PASSWORD_72))  # the stored password works


def test_other_users_are_unaffected_by_a_bcrypt_refusal(app: Flask) -> None:
    store_hash(app, USER[0], bcrypt_hash("short-bcrypt-password"))
    response = sign_in(app.test_client(), USER[0], "q" * 90, json=True)
    assert response.status_code == 401
    sign_in_ok(app.test_client(), ADMIN)


# -- legacy hashes cost what current ones cost ------------------------------------------


def hash_kind(stored: str) -> str:
    """What determines a verification's cost: the scheme and its parameters."""
    if stored.startswith("$2"):
        return stored[:7]  # $2b$12$
    return "$".join(stored.split("$")[:4])  # $argon2id$v=19$m=...,t=...,p=...


class KindRecorder(CountingContext):
    """Records the kind of every hash a verification runs against."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.kinds: list[str] = []

    def verify(self, secret: Any, stored: Any, *args: Any, **kwargs: Any) -> Any:
        self.kinds.append(hash_kind(stored))
        return super().verify(secret, stored, *args, **kwargs)

    def verify_and_update(self, secret: Any, stored: Any, *args: Any, **kwargs: Any) -> Any:
        self.kinds.append(hash_kind(stored))
        return super().verify_and_update(secret, stored, *args, **kwargs)


def test_a_failed_attempt_costs_the_same_whatever_scheme_the_account_uses(
    make_app: AppFactory,
) -> None:
    """A wrong password for a bcrypt account (or one with older argon2 parameters) must
    not take longer than one for an unknown email: while such hashes exist, every failed
    attempt verifies once against each kind of hash in use, so all failures cost alike."""
    app = app_with_inactive_user(make_app)
    weak = argon2.PasswordHasher(parallelism=1, memory_cost=512, time_cost=1).hash("x" * 12)
    store_hash(app, ADMIN[0], bcrypt_hash(ADMIN[1]))
    store_hash(app, INACTIVE[0], weak)
    recorder = KindRecorder(hasher_of(app).context)
    hasher_of(app).context = recorder
    cases = {
        "unknown email": ("nobody@example.com", USER[1]),
        "current argon2, wrong password": (USER[0], "wrong-password-000"),
        "bcrypt, wrong password": (ADMIN[0], "wrong-password-000"),
        "older argon2, wrong password": (INACTIVE[0], "wrong-password-000"),
        "inactive, right password": (INACTIVE[0], "x" * 12),
    }
    spent: dict[str, list[str]] = {}
    for name, (email, password) in cases.items():
        recorder.kinds.clear()
        response = sign_in(app.test_client(), email, password, json=True)
        assert response.get_json() == FAILED_JSON, name
        spent[name] = sorted(recorder.kinds)
    first = spent["unknown email"]
    assert len(first) == 3  # current argon2id, bcrypt and the older argon2
    assert spent == dict.fromkeys(cases, first)


def test_only_current_hashes_cost_one_verification(app: Flask) -> None:
    recorder = KindRecorder(hasher_of(app).context)
    hasher_of(app).context = recorder
    sign_in(app.test_client(), "nobody@example.com", USER[1], json=True)
    sign_in(app.test_client(), USER[0], "wrong-password-000", json=True)
    assert len(recorder.kinds) == 2


def test_password_report_counts_hashes_by_scheme(app: Flask) -> None:
    store_hash(app, ADMIN[0], bcrypt_hash(ADMIN[1]))
    result = app.test_cli_runner().invoke(args=["guardian", "password-report"])
    assert result.exit_code == 0, result.output
    counts = {
        line.split(":")[0].strip(): int(line.split(":")[1])
        for line in result.output.splitlines() if ":" in line
    }
    assert counts["argon2id (current parameters)"] == 1
    assert counts["bcrypt"] == 1
    assert counts["to upgrade"] == 1


# -- Werkzeug's hashes (an existing app's generate_password_hash output) ----------------

#: Cheap parameters of each Werkzeug method, as generate_password_hash writes them.
WERKZEUG_METHODS = {"scrypt": "scrypt:1024:8:1", "pbkdf2": "pbkdf2:sha256:1000"}


def werkzeug_hash(password: str, method: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method=WERKZEUG_METHODS[method])


class WerkzeugChecks:
    """Records the method of every hash Werkzeug's ``check_password_hash`` checks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import flask_guardian.credentials as credentials

        self.methods: list[str] = []
        real = credentials.check_password_hash

        def check(stored: str, password: str) -> bool:
            self.methods.append(stored.split("$")[0])
            return real(stored, password)

        monkeypatch.setattr(credentials, "check_password_hash", check)


@pytest.mark.parametrize("method", sorted(WERKZEUG_METHODS))
def test_werkzeug_hash_is_checked_by_werkzeug_and_upgraded_to_argon2id(
    app: Flask, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_hash(app, USER[0], werkzeug_hash(USER[1], method))
    checks = WerkzeugChecks(monkeypatch)
    hasher = hasher_of(app)
    before = hasher.hash_computations
    sign_in_ok(app.test_client(), USER)
    assert hasher.hash_computations - before == 2  # the check, then the new hash
    assert checks.methods == [WERKZEUG_METHODS[method]]
    upgraded = stored_hash(app, USER[0])
    assert upgraded.startswith(get_state(app).hasher.current_kind)
    sign_in_ok(app.test_client(), USER)  # the new hash verifies
    assert stored_hash(app, USER[0]) == upgraded
    assert checks.methods == [WERKZEUG_METHODS[method]]  # and Werkzeug is not asked again


def test_default_werkzeug_hash_signs_in(app: Flask) -> None:
    from werkzeug.security import generate_password_hash

    store_hash(app, USER[0], generate_password_hash(USER[1]))  # Werkzeug's own defaults
    sign_in_ok(app.test_client(), USER)
    assert stored_hash(app, USER[0]).startswith("$argon2id$")


@pytest.mark.parametrize("method", sorted(WERKZEUG_METHODS))
def test_wrong_password_does_not_upgrade_a_werkzeug_hash(app: Flask, method: str) -> None:
    old = werkzeug_hash(USER[1], method)
    store_hash(app, USER[0], old)
    response = sign_in(app.test_client(), USER[0], "wrong-password-000", json=True)
    assert response.get_json() == FAILED_JSON
    assert stored_hash(app, USER[0]) == old


def test_authenticate_upgrades_a_werkzeug_hash(app: Flask) -> None:
    store_hash(app, USER[0], werkzeug_hash(USER[1], "pbkdf2"))
    hasher = hasher_of(app)
    with app.app_context():
        before = hasher.hash_computations
        assert guardian_of(app).authenticate(*USER) is not None
        assert hasher.hash_computations - before == 2
        db_of(app).session.commit()
    assert stored_hash(app, USER[0]).startswith("$argon2id$")


def test_a_failed_attempt_costs_the_same_beside_werkzeug_hashes(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While Werkzeug hashes remain, every failure also checks a throw-away hash of each
    Werkzeug kind: an unknown email costs what a wrong scrypt password costs."""
    app = app_with_inactive_user(make_app)
    store_hash(app, ADMIN[0], werkzeug_hash(ADMIN[1], "scrypt"))
    store_hash(app, INACTIVE[0], werkzeug_hash(INACTIVE[1], "pbkdf2"))
    recorder = KindRecorder(hasher_of(app).context)
    hasher_of(app).context = recorder
    checks = WerkzeugChecks(monkeypatch)
    cases = {
        "unknown email": ("nobody@example.com", USER[1]),
        "current argon2, wrong password": (USER[0], "wrong-password-000"),
        "scrypt, wrong password": (ADMIN[0], "wrong-password-000"),
        "pbkdf2, wrong password": (INACTIVE[0], "wrong-password-000"),
        "inactive pbkdf2, right password": INACTIVE,
    }
    spent: dict[str, list[str]] = {}
    for name, (email, password) in cases.items():
        recorder.kinds.clear()
        checks.methods.clear()
        hasher = hasher_of(app)
        before = hasher.hash_computations
        response = sign_in(app.test_client(), email, password, json=True)
        assert response.get_json() == FAILED_JSON, name
        spent[name] = sorted(recorder.kinds + checks.methods)
        if name != "inactive pbkdf2, right password":  # that one also re-hashes (as bcrypt)
            assert hasher.hash_computations - before == 3, name
    first = spent["unknown email"]
    assert len(first) == 3  # current argon2id, scrypt and pbkdf2
    assert spent == dict.fromkeys(cases, first)
    assert stored_hash(app, INACTIVE[0]).startswith("pbkdf2:")  # no upgrade when refused


def test_unreadable_werkzeug_looking_hash_is_a_plain_refusal(app: Flask) -> None:
    store_hash(app, USER[0], "scrypt:not-a-hash")
    response = sign_in(app.test_client(), USER[0], USER[1], json=True)
    assert response.status_code == 401
    assert response.get_json() == FAILED_JSON


def test_password_report_counts_werkzeug_hashes(app: Flask) -> None:
    store_hash(app, ADMIN[0], werkzeug_hash(ADMIN[1], "scrypt"))
    result = app.test_cli_runner().invoke(args=["guardian", "password-report"])
    assert result.exit_code == 0, result.output
    assert "werkzeug scrypt:1024:8:1: 1" in result.output
    assert "to upgrade: 1" in result.output
    assert "argon2id (current parameters): 1" in result.output
