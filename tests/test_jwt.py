"""The jwt strategy refuses every token it did not issue unchanged: forged, tampered,
expired, not-yet-valid, wrong key, wrong claims, `alg: none`, unknown `kid`. Bearer tokens
work for API clients; keys rotate by `kid`; asymmetric algorithms work."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt as pyjwt
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import Flask
from helpers import (
    JWT_SECRET,
    USER,
    AppFactory,
    QueryCounter,
    cookie_name,
    guardian_of,
    session_cookie,
    sign_in,
    sign_in_ok,
    sign_out,
)

from flask_guardian.state import get_state

# The full database matrix: revocation rows and the revocation feed.
pytestmark = pytest.mark.databases


@pytest.fixture(params=["jwt"])
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def claims_of(token: str) -> dict[str, Any]:
    return pyjwt.decode(token, options={"verify_signature": False})


def signed_in_token(app: Flask) -> str:
    client = app.test_client()
    sign_in_ok(client)
    token = session_cookie(client, app)
    assert token
    return token


def request_with(app: Flask, token: str, *, bearer: bool = False) -> Any:
    client = app.test_client()
    if bearer:
        return client.get("/api/me", headers={"Authorization": f"Bearer {token}",
                                              "Accept": "application/json"})
    client.set_cookie(cookie_name(app), token)
    return client.get("/api/me", headers={"Accept": "application/json"})


def forge(claims: dict[str, Any], key: Any = JWT_SECRET, algorithm: str = "HS256",
          headers: dict[str, Any] | None = None) -> str:
    return pyjwt.encode(claims, key, algorithm=algorithm, headers=headers)


def test_issued_token_carries_the_documented_claims(app: Flask) -> None:
    claims = claims_of(signed_in_token(app))
    for name in ("sub", "sid", "jti", "iat", "nbf", "exp", "iss", "aud", "auth_time",
                 "email", "name", "role"):
        assert name in claims
    assert claims["sub"] == "2"
    assert claims["email"] == USER[0]
    assert claims["aud"] == "flask-guardian"
    header = pyjwt.get_unverified_header(signed_in_token(app))
    assert header["alg"] == "HS256"


def test_token_verifies_with_the_configured_secret_as_given(app: Flask) -> None:
    """Another service holding GUARDIAN_JWT_SECRET can verify the tokens."""
    token = signed_in_token(app)
    claims = pyjwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="flask-guardian")
    assert claims["email"] == USER[0]


def test_valid_cookie_and_bearer_are_accepted(app: Flask) -> None:
    token = signed_in_token(app)
    assert request_with(app, token).status_code == 200
    response = request_with(app, token, bearer=True)
    assert response.status_code == 200
    assert response.get_json()["user"]["email"] == USER[0]


def test_ordinary_request_reads_nothing_from_the_database(app: Flask) -> None:
    token = signed_in_token(app)
    request_with(app, token)
    with QueryCounter(app) as queries:
        assert request_with(app, token, bearer=True).status_code == 200
    assert queries.count == 0


@pytest.mark.parametrize("mutation", ["signature", "payload", "header"])
def test_tampered_token_is_anonymous(app: Flask, mutation: str) -> None:
    token = signed_in_token(app)
    header, payload, signature = token.split(".")
    if mutation == "signature":
        signature = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    elif mutation == "payload":
        claims = claims_of(token)
        claims["role"] = "admin"
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    else:
        header = base64.urlsafe_b64encode(b'{"alg":"HS512","typ":"JWT"}').rstrip(b"=").decode()
    assert request_with(app, f"{header}.{payload}.{signature}").status_code == 401


def test_alg_none_is_refused(app: Flask) -> None:
    claims = claims_of(signed_in_token(app))
    claims["role"] = "admin"
    unsigned = forge(claims, key=None, algorithm="none")
    assert request_with(app, unsigned).status_code == 401
    assert request_with(app, unsigned, bearer=True).status_code == 401


# The test secret is shorter than PyJWT recommends for SHA-384/512: only the forger uses it.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("bearer", [False, True], ids=["cookie", "bearer"])
def test_token_signed_with_the_right_secret_but_another_algorithm_is_refused(
    app: Flask, bearer: bool
) -> None:
    """The algorithm allow-list is pinned (HS256 here): a token signed with the configured
    secret under HS512 is refused, although its signature checks out under the algorithm
    its own header names. The same claims signed HS256 are accepted, so the algorithm is
    the only reason for the refusal."""
    claims = claims_of(signed_in_token(app))
    assert request_with(app, forge(claims, algorithm="HS256"), bearer=bearer).status_code == 200
    for algorithm in ("HS512", "HS384"):
        other = forge(claims, algorithm=algorithm)
        assert pyjwt.get_unverified_header(other)["alg"] == algorithm
        assert request_with(app, other, bearer=bearer).status_code == 401, algorithm


def test_token_signed_with_another_key_is_refused(app: Flask) -> None:
    claims = claims_of(signed_in_token(app))
    assert request_with(app, forge(claims, key="another-secret-" + "y" * 32)).status_code == 401


def test_hs256_token_signed_with_public_key_confusion_is_refused(make_app: AppFactory) -> None:
    private, public = _rsa_pair()
    app = make_app(GUARDIAN_JWT_ALGORITHM="RS256", GUARDIAN_JWT_PRIVATE_KEY=private,
                   GUARDIAN_JWT_PUBLIC_KEY=public)
    claims = claims_of(signed_in_token(app))
    # The classic confusion attack: HMAC with the public key as secret.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    import hashlib
    import hmac
    mac = hmac.new(public.encode(), header + b"." + body, hashlib.sha256).digest()
    forged = (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    assert request_with(app, forged).status_code == 401


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iss", "someone-else"), ("aud", "another-service"), ("sub", "not-a-number"),
     ("sid", 12345), ("role", ["admin"])],
)
def test_wrong_claims_are_refused(app: Flask, claim: str, value: Any) -> None:
    claims = claims_of(signed_in_token(app))
    claims[claim] = value
    assert request_with(app, forge(claims)).status_code == 401


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "sub", "jti", "iss", "aud", "sid"])
def test_missing_required_claim_is_refused(app: Flask, claim: str) -> None:
    claims = claims_of(signed_in_token(app))
    del claims[claim]
    assert request_with(app, forge(claims)).status_code == 401


def test_expired_token_is_refused(app: Flask) -> None:
    claims = claims_of(signed_in_token(app))
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 10)
    assert request_with(app, forge(claims)).status_code == 401


def test_not_yet_valid_token_is_refused(app: Flask) -> None:
    claims = claims_of(signed_in_token(app))
    now = int(time.time())
    claims.update(nbf=now + 600, iat=now)
    assert request_with(app, forge(claims)).status_code == 401


def test_cached_token_still_expires(app: Flask) -> None:
    token = signed_in_token(app)
    assert request_with(app, token).status_code == 200  # now cached
    exp = claims_of(token)["exp"]
    with time_machine.travel(exp + 1, tick=False):
        assert request_with(app, token, bearer=True).status_code == 401


def test_unknown_kid_is_refused(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_JWT_KEYS=[{"kid": "k1", "secret": "k1-secret-" + "a" * 32}])
    claims = claims_of(signed_in_token(app))
    forged = forge(claims, key="k1-secret-" + "a" * 32, headers={"kid": "k9"})
    assert request_with(app, forged).status_code == 401
    no_kid = forge(claims, key="k1-secret-" + "a" * 32)
    assert request_with(app, no_kid).status_code == 401


def test_kid_where_none_is_configured_is_refused(app: Flask) -> None:
    claims = claims_of(signed_in_token(app))
    assert request_with(app, forge(claims, headers={"kid": "k1"})).status_code == 401


def test_key_rotation_first_signs_all_verify(make_app: AppFactory) -> None:
    old = {"kid": "k1", "secret": "k1-secret-" + "a" * 32}
    new = {"kid": "k2", "secret": "k2-secret-" + "b" * 32}
    before = make_app(GUARDIAN_JWT_KEYS=[old])
    old_token = signed_in_token(before)
    assert pyjwt.get_unverified_header(old_token)["kid"] == "k1"
    # Same database, rotated configuration: the new key signs, the old one still verifies.
    after = make_app(GUARDIAN_JWT_KEYS=[new, old])
    assert request_with(after, old_token).status_code == 200
    assert pyjwt.get_unverified_header(signed_in_token(after))["kid"] == "k2"
    # Old key retired: its tokens are refused.
    retired = make_app(GUARDIAN_JWT_KEYS=[new])
    assert request_with(retired, old_token).status_code == 401


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pems(key)


def _pems(key: Any) -> tuple[str, str]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_algorithms(make_app: AppFactory, algorithm: str) -> None:
    key: Any = {
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[algorithm]()
    private, public = _pems(key)
    app = make_app(GUARDIAN_JWT_ALGORITHM=algorithm, GUARDIAN_JWT_PRIVATE_KEY=private)
    token = signed_in_token(app)
    assert pyjwt.get_unverified_header(token)["alg"] == algorithm
    assert pyjwt.decode(token, public, algorithms=[algorithm], audience="flask-guardian")
    assert request_with(app, token).status_code == 200


def test_signed_out_bearer_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    response = sign_in(client, *USER, json=True)
    token = session_cookie(client, app)
    assert response.status_code == 200 and token
    assert request_with(app, token, bearer=True).status_code == 200
    csrf = client.get("/auth/csrf").get_json()["csrfToken"]
    client.post("/auth/signout", json={"csrfToken": csrf})
    assert request_with(app, token, bearer=True).status_code == 401


def test_bearer_signout_needs_no_csrf(app: Flask) -> None:
    token = signed_in_token(app)
    api = app.test_client()
    response = api.post("/auth/signout", headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"})
    assert response.status_code == 200
    assert request_with(app, token, bearer=True).status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer " + "a" * 10000,
                                    "Bearer not.a.jwt", "Bearer ünïcode"])
def test_malformed_authorization_header_is_anonymous(app: Flask, header: str) -> None:
    client = app.test_client()
    response = client.get("/api/me", headers={"Authorization": header,
                                              "Accept": "application/json"})
    assert response.status_code == 401


def test_valid_token_longer_than_the_length_limit_is_refused(make_app: AppFactory) -> None:
    """GUARDIAN_TOKEN_MAX_LENGTH bounds what is parsed at all: a token we issued, valid in
    every other way, is refused as a bearer token and as a cookie once it is longer than
    the limit, and accepted again by a limit that fits it."""
    app = make_app()
    with app.app_context():
        guardian_of(app).create_user("long.name@example.com", "long-name-password-1",
                                     name="N" * 200)
    client = app.test_client()
    sign_in_ok(client, ("long.name@example.com", "long-name-password-1"))
    token = session_cookie(client, app)
    assert token is not None
    assert len(token) > 2 * 256  # the long name makes long claims
    for bearer in (False, True):
        assert request_with(app, token, bearer=bearer).status_code == 200  # 4096 by default
    fits = make_app(GUARDIAN_TOKEN_MAX_LENGTH=len(token))
    too_small = make_app(GUARDIAN_TOKEN_MAX_LENGTH=len(token) - 1)
    smallest = make_app(GUARDIAN_TOKEN_MAX_LENGTH=256)
    for bearer in (False, True):
        assert request_with(fits, token, bearer=bearer).status_code == 200
        assert request_with(too_small, token, bearer=bearer).status_code == 401
        assert request_with(smallest, token, bearer=bearer).status_code == 401


def test_sign_out_in_one_app_is_refused_by_another_sharing_the_database(
    make_app: AppFactory,
) -> None:
    """Two processes in one: two Flask apps, two Guardian instances, two SQLAlchemy
    objects on one database, with GUARDIAN_JWT_REVOCATION_INTERVAL = 0. A token the
    second app has verified (and cached) is refused by it once the first signs it out:
    the revocation reaches it through the database's revocation feed, not through memory
    the two share."""
    first = make_app(GUARDIAN_JWT_REVOCATION_INTERVAL=0)
    second = make_app(GUARDIAN_JWT_REVOCATION_INTERVAL=0)
    assert guardian_of(first) is not guardian_of(second)
    assert first.extensions["sqlalchemy"] is not second.extensions["sqlalchemy"]
    assert get_state(first).strategy is not (
        get_state(second).strategy
    )
    client = first.test_client()
    sign_in_ok(client)
    token = session_cookie(client, first)
    assert token
    for bearer in (False, True):
        assert request_with(second, token, bearer=bearer).status_code == 200
    assert sign_out(client).status_code == 303
    assert request_with(first, token).status_code == 401
    for bearer in (False, True):
        assert request_with(second, token, bearer=bearer).status_code == 401


def test_other_authorization_schemes_leave_the_cookie_in_charge(app: Flask) -> None:
    token = signed_in_token(app)
    client = app.test_client()
    client.set_cookie(cookie_name(app), token)
    response = client.get("/api/me", headers={"Authorization": "Basic dXNlcjpwYXNz",
                                               "Accept": "application/json"})
    assert response.status_code == 200
    assert response.headers.getlist("Set-Cookie") == []


def test_bearer_client_gets_refreshed_token_in_a_header_and_stays_signed_in(
    app: Flask,
) -> None:
    """A bearer client cannot read Set-Cookie: a refresh goes out as X-Guardian-Token,
    and a client that keeps the old token is re-checked once per update age, not on
    every request."""
    from datetime import UTC, datetime, timedelta

    from helpers import QueryCounter

    settings = get_state(app).settings
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        token = signed_in_token(app)
    later = start + timedelta(seconds=settings.update_age + 1)
    with time_machine.travel(later, tick=False):
        response = request_with(app, token, bearer=True)
        assert response.status_code == 200
        assert response.headers.getlist("Set-Cookie") == []
        fresh = response.headers["X-Guardian-Token"]
        assert claims_of(fresh)["sid"] == claims_of(token)["sid"]
        with QueryCounter(app) as queries:
            assert request_with(app, token, bearer=True).status_code == 200
            assert request_with(app, fresh, bearer=True).status_code == 200
        assert queries.writes == []
    # The new token lives on past the old one's idle deadline.
    beyond = later + timedelta(seconds=settings.idle_timeout - 1)
    with time_machine.travel(beyond, tick=False):
        assert request_with(app, fresh, bearer=True).status_code == 200


@pytest.mark.parametrize("header", ["Bearer ", "Bearer " + "x" * 5000, "Bearer ünïcödé"])
def test_an_unusable_bearer_header_does_not_clear_a_good_cookie(app: Flask, header: str) -> None:
    """The bearer header is refused (401), but the browser's own cookie was not the
    credential that failed: it must not be cleared."""
    client = app.test_client()
    sign_in_ok(client)
    response = client.get("/api/me", headers={"Authorization": header,
                                              "Accept": "application/json"})
    assert response.status_code == 401
    assert not [h for h in response.headers.getlist("Set-Cookie")
                if h.startswith(cookie_name(app) + "=")]
    assert client.get("/api/me", headers={"Accept": "application/json"}).status_code == 200
