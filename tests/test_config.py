"""Configuration is validated once, at init_app, with a message naming the key and what it
accepts; a bad value never reaches a request."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import BASE_CONFIG

from flask_guardian import ConfigurationError, Guardian
from flask_guardian.api_token_settings import API_TOKEN_DEFAULTS
from flask_guardian.config import DEFAULTS
from flask_guardian.state import get_state
from flask_guardian.strategies import DatabaseStrategy, JWTStrategy

#: The jwt strategy, whose own keys (``JWTStrategy.config_keys``) are read only when it runs.
JWT = {"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_SECRET": "s" * 32}
#: Every key init_app knows: the common ones and those the shipped strategies declare.
KNOWN = {**DEFAULTS, **API_TOKEN_DEFAULTS, **JWTStrategy.config_keys}


def init(**config: Any) -> Flask:
    app = Flask("config_test")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://")
    app.config.update(config)
    Guardian(app, db=SQLAlchemy(app))
    return app


def settings_of(app: Flask) -> Any:
    return get_state(app).settings


@pytest.mark.parametrize(
    ("config", "key", "fragment"),
    [
        ({"SESSION_STRATEGY": "memcached"}, "SESSION_STRATEGY", "'database', 'jwt', 'redis'"),
        ({"SESSION_STRATEGY": "redis"}, "GUARDIAN_REDIS_URL", "redis://"),
        ({"SESSION_STRATEGY": "redis", "GUARDIAN_REDIS_URL": "http://x"}, "GUARDIAN_REDIS_URL",
         "redis-py URL"),
        ({"GUARDIAN_REDIS_PREFIX": ""}, "GUARDIAN_REDIS_PREFIX", "non-empty"),
        ({"GUARDIAN_REDIS_URL": "redis://h:port/0"}, "GUARDIAN_REDIS_URL", "cannot read"),
        ({"SESSION_STRATEGY": "no.such.module.Strategy"}, "SESSION_STRATEGY", "cannot import"),
        ({"SESSION_STRATEGY": 42}, "SESSION_STRATEGY", "SessionStrategy subclass"),
        ({"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_SECRET": "short"}, "GUARDIAN_JWT_SECRET",
         "at least 32 bytes"),
        ({"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_SECRET": None}, "GUARDIAN_JWT_SECRET",
         "needs a secret"),
        ({"GUARDIAN_JWT_ALGORITHM": "none"}, "GUARDIAN_JWT_ALGORITHM", "HS256"),
        ({"GUARDIAN_COOKIE_SECURE": False, "GUARDIAN_COOKIE_NAME": "__Host-x"},
         "GUARDIAN_COOKIE_NAME", "__Host- cookie needs GUARDIAN_COOKIE_SECURE"),
        ({"GUARDIAN_COOKIE_SECURE": True, "GUARDIAN_COOKIE_DOMAIN": "example.com",
          "GUARDIAN_COOKIE_NAME": "__Host-x"}, "GUARDIAN_COOKIE_NAME", "no domain"),
        ({"GUARDIAN_COOKIE_SECURE": "yes"}, "GUARDIAN_COOKIE_SECURE", "True or False"),
        ({"GUARDIAN_COOKIE_SAMESITE": "lax"}, "GUARDIAN_COOKIE_SAMESITE", "'Strict'"),
        ({"GUARDIAN_COOKIE_SAMESITE": "None"}, "GUARDIAN_COOKIE_SAMESITE", "requires"),
        ({"GUARDIAN_COOKIE_NAME": "bad name;"}, "GUARDIAN_COOKIE_NAME", "not a valid"),
        ({"GUARDIAN_SESSION_MAX_AGE": "3600"}, "GUARDIAN_SESSION_MAX_AGE", "whole number"),
        ({"GUARDIAN_SESSION_IDLE_TIMEOUT": 10}, "GUARDIAN_SESSION_IDLE_TIMEOUT", ">= 60"),
        ({"GUARDIAN_SESSION_UPDATE_AGE": 4000}, "GUARDIAN_SESSION_UPDATE_AGE", "smaller than"),
        ({"GUARDIAN_URL_PREFIX": "auth"}, "GUARDIAN_URL_PREFIX", "starting with one '/'"),
        ({"GUARDIAN_DEFAULT_REDIRECT": "//evil.com"}, "GUARDIAN_DEFAULT_REDIRECT", "path"),
        ({"GUARDIAN_PROTECTED_ROUTES": ["/admin"]}, "GUARDIAN_PROTECTED_ROUTES", "dict"),
        ({"GUARDIAN_PROTECTED_ROUTES": {"/a": {"roles": "admin"}}},
         "GUARDIAN_PROTECTED_ROUTES", "list of strings"),
        ({"GUARDIAN_PROTECTED_ROUTES": {"/a": {"role": ["admin"]}}},
         "GUARDIAN_PROTECTED_ROUTES", "'roles'"),
        ({"GUARDIAN_MAX_LOGIN_ATTEMPTS": 0}, "GUARDIAN_MAX_LOGIN_ATTEMPTS", ">= 1"),
        ({"GUARDIAN_ON_SUSPICIOUS_SESSION": "panic"}, "GUARDIAN_ON_SUSPICIOUS_SESSION", "'log'"),
        ({**JWT, "GUARDIAN_JWT_REVOCATION_INTERVAL": -1}, "GUARDIAN_JWT_REVOCATION_INTERVAL",
         "0 to 300"),
        ({"SECRET_KEY": None}, "SECRET_KEY", "at least 16 bytes"),
        ({"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_KEYS": []}, "GUARDIAN_JWT_KEYS", "non-empty"),
        ({"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_KEYS": [{"secret": "x" * 40}]},
         "GUARDIAN_JWT_KEYS[0]", "'kid'"),
        ({"SESSION_STRATEGY": "jwt",
          "GUARDIAN_JWT_KEYS": [{"kid": "a", "secret": "x" * 40},
                                {"kid": "a", "secret": "y" * 40}]},
         "GUARDIAN_JWT_KEYS", "unique"),
        ({"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_ALGORITHM": "ES256"},
         "GUARDIAN_JWT_PRIVATE_KEY", "PEM private key"),
        ({"SESSION_STRATEGY": "jwt", "GUARDIAN_JWT_ALGORITHM": "ES256",
          "GUARDIAN_JWT_PRIVATE_KEY": "not a pem"}, "GUARDIAN_JWT_PRIVATE_KEY", "not a readable"),
    ],
)
def test_unusable_value_fails_at_init_app_naming_the_key(
    config: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        init(**config)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert fragment in str(info.value)


def test_guardian_without_db_fails_at_init_app() -> None:
    app = Flask("no_db")
    app.config.update(BASE_CONFIG)
    with pytest.raises(ConfigurationError, match="db"):
        Guardian(app)


def test_key_of_the_wrong_type_for_the_algorithm_fails() -> None:
    rsa_pem = _ec_private_pem()
    with pytest.raises(ConfigurationError, match="cannot sign RS256"):
        init(SESSION_STRATEGY="jwt", GUARDIAN_JWT_ALGORITHM="RS256",
             GUARDIAN_JWT_PRIVATE_KEY=rsa_pem)


def _ec_private_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_defaults() -> None:
    settings = settings_of(init(GUARDIAN_COOKIE_SECURE=True))
    assert settings.strategy_class is DatabaseStrategy
    assert settings.cookie_name == "__Host-guardian"
    assert settings.cookie_samesite == "Lax"
    assert settings.max_age == 12 * 3600
    assert settings.idle_timeout == 30 * 60
    assert settings.max_login_attempts == 5
    assert settings.lockout_duration == 900
    assert settings.url_prefix == "/auth"
    assert settings.default_redirect == "/"


def test_cookie_name_without_secure_or_with_domain_is_plain() -> None:
    assert settings_of(init(GUARDIAN_COOKIE_SECURE=False)).cookie_name == "guardian"
    assert settings_of(
        init(GUARDIAN_COOKIE_SECURE=True, GUARDIAN_COOKIE_DOMAIN="example.com")
    ).cookie_name == "guardian"
    assert settings_of(init(GUARDIAN_COOKIE_NAME="sid")).cookie_name == "sid"


def test_strategy_by_class_and_import_string() -> None:
    by_class = settings_of(init(SESSION_STRATEGY=JWTStrategy))
    assert by_class.strategy_class is JWTStrategy
    by_string = settings_of(init(SESSION_STRATEGY="flask_guardian.strategies.jwt:JWTStrategy"))
    assert by_string.strategy_class is JWTStrategy


def test_protected_routes_sorted_longest_first() -> None:
    settings = settings_of(init(GUARDIAN_PROTECTED_ROUTES={
        "/admin": {"roles": ["admin"]}, "/admin/reports/": {}, "/": {},
    }))
    assert [r.prefix for r in settings.protected_routes] == ["/admin/reports", "/admin", "/"]


def test_one_guardian_serves_several_apps() -> None:
    db = SQLAlchemy()
    guardian = Guardian(db=db)
    apps = []
    for strategy in ("database", "jwt"):
        app = Flask(f"multi_{strategy}")
        app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://",
                          SESSION_STRATEGY=strategy)
        db.init_app(app)
        guardian.init_app(app)
        apps.append(app)
    assert all(a.extensions["guardian"] is guardian for a in apps)
    assert [settings_of(a).strategy_class for a in apps] == [DatabaseStrategy, JWTStrategy]
    for app in apps:
        with app.app_context():
            db.create_all()
            user = guardian.create_user("x@example.com", "long-enough-password")
            assert guardian.authenticate("x@example.com", "long-enough-password") == user


def test_guardian_secret_key_stands_in_for_flask_secret_key() -> None:
    app = init(SECRET_KEY=None, GUARDIAN_SECRET_KEY="g" * 32)
    assert settings_of(app).secret_key == b"g" * 32
    assert app.secret_key is None  # Flask's own cookie session stays off
    with pytest.raises(ConfigurationError) as info:
        init(SECRET_KEY=None, GUARDIAN_SECRET_KEY="short")
    assert info.value.key == "GUARDIAN_SECRET_KEY"


DURATION_KEYS = sorted(
    key for key in KNOWN
    if key.endswith(("_AGE", "_TIMEOUT", "_DURATION", "_INTERVAL", "_LEEWAY"))
)


def test_durations_accept_seconds_or_a_timedelta() -> None:
    settings = settings_of(init(
        GUARDIAN_SESSION_MAX_AGE=timedelta(hours=8),
        GUARDIAN_SESSION_IDLE_TIMEOUT=timedelta(minutes=20),
        GUARDIAN_SESSION_UPDATE_AGE=timedelta(minutes=1),
        GUARDIAN_LOCKOUT_DURATION=timedelta(minutes=10),
        GUARDIAN_JWT_LEEWAY=timedelta(seconds=3),
        GUARDIAN_JWT_REVOCATION_INTERVAL=timedelta(milliseconds=500),
        **JWT,
    ))
    assert (settings.max_age, settings.idle_timeout, settings.update_age) == (8 * 3600, 1200, 60)
    assert (settings.lockout_duration, settings.jwt_leeway) == (600, 3)
    assert settings.strategy_options.revocation_interval == 0.5
    assert all(type(v) is int for v in (settings.max_age, settings.lockout_duration))


@pytest.mark.parametrize("key", DURATION_KEYS)
def test_every_duration_key_accepts_a_timedelta(key: str) -> None:
    assert {"GUARDIAN_SESSION_MAX_AGE", "GUARDIAN_LOCKOUT_DURATION",
            "GUARDIAN_JWT_REVOCATION_INTERVAL"} <= set(DURATION_KEYS)
    init(**{key: timedelta(seconds=KNOWN[key])}, **JWT)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("GUARDIAN_SESSION_MAX_AGE", timedelta(seconds=30), ">= 60"),
        ("GUARDIAN_SESSION_MAX_AGE", timedelta(seconds=90.5), "whole number of seconds"),
        ("GUARDIAN_LOCKOUT_DURATION", 900.0, "whole number of seconds"),
        ("GUARDIAN_LOCKOUT_DURATION", True, "timedelta"),
        ("GUARDIAN_JWT_REVOCATION_INTERVAL", timedelta(minutes=6), "from 0 to 300"),
    ],
)
def test_unusable_duration_names_the_key(key: str, value: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        init(**{key: value}, **JWT)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_unknown_guardian_key_fails_naming_the_closest_known_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        init(GUARDIAN_SESION_MAX_AGE=3600)
    assert info.value.key == "GUARDIAN_SESION_MAX_AGE"
    assert "did you mean GUARDIAN_SESSION_MAX_AGE?" in str(info.value)
    with pytest.raises(ConfigurationError, match="not a flask-guardian setting"):
        init(GUARDIAN_QUUX=1)


def test_keys_without_the_guardian_prefix_are_not_ours_to_judge() -> None:
    init(MY_APP_SETTING=1, SESSION_COOKIE_NAME="flask-session", GUARDIANS=3)


def test_every_key_the_package_names_is_a_known_key() -> None:
    # The unknown-key check knows DEFAULTS only: a key read anywhere else in the package
    # would be refused as a typo. Settings documented in docs/configuration.md, too.
    package = Path(__file__).resolve().parents[1] / "flask_guardian"
    named = {
        key for path in package.rglob("*.py")
        for key in re.findall(r"\bGUARDIAN_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8"))
    }
    assert named - KNOWN.keys() == set()
    documented = (package.parent / "docs" / "configuration.md").read_text("utf-8")
    assert [key for key in KNOWN if f"`{key}`" not in documented] == []
@pytest.mark.parametrize(("key", "value"), [
    ("GUARDIAN_DB_CONNECT_TIMEOUT", 0), ("GUARDIAN_DB_CONNECT_TIMEOUT", "3"),
    ("GUARDIAN_DB_STATEMENT_TIMEOUT", 301), ("GUARDIAN_DB_STATEMENT_TIMEOUT", True),
    ("GUARDIAN_JWT_FAIL_OPEN", "yes"),
])
def test_unusable_outage_setting_fails_at_init_app_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        init(**{**JWT, key: value})


def test_outage_settings_accept_seconds_timedelta_and_none() -> None:
    from datetime import timedelta

    settings = settings_of(init(GUARDIAN_DB_CONNECT_TIMEOUT=timedelta(seconds=4),
                                GUARDIAN_DB_STATEMENT_TIMEOUT=None,
                                GUARDIAN_JWT_FAIL_OPEN=True, **JWT))
    assert settings.db_connect_timeout == 4.0
    assert settings.db_statement_timeout is None
    assert settings.strategy_options.fail_open is True
    defaults = settings_of(init(**JWT))
    assert (defaults.db_connect_timeout, defaults.db_statement_timeout) == (3.0, 2.0)
    assert defaults.strategy_options.fail_open is False


def test_a_strategy_declares_and_validates_its_own_keys() -> None:
    """An application's strategy names its keys and checks them itself (the shipped jwt
    strategy does the same); a typo among them fails like any other, and another
    strategy's keys are known but not read."""
    from collections.abc import Mapping

    from flask_guardian.config_values import read_int

    class Recording(DatabaseStrategy):
        name = "recording"
        config_keys: Mapping[str, Any] = {"GUARDIAN_RECORDING_LIMIT": 3}

        @classmethod
        def read_options(cls, config: Mapping[str, Any], settings: Any) -> int:
            return read_int(config, "GUARDIAN_RECORDING_LIMIT", minimum=1)

    assert settings_of(init(SESSION_STRATEGY=Recording)).strategy_options == 3
    assert settings_of(init(SESSION_STRATEGY=Recording,
                            GUARDIAN_RECORDING_LIMIT=7)).strategy_options == 7
    with pytest.raises(ConfigurationError, match=">= 1") as info:
        init(SESSION_STRATEGY=Recording, GUARDIAN_RECORDING_LIMIT=0)
    assert info.value.key == "GUARDIAN_RECORDING_LIMIT"
    with pytest.raises(ConfigurationError, match="did you mean GUARDIAN_RECORDING_LIMIT"):
        init(SESSION_STRATEGY=Recording, GUARDIAN_RECORDING_LIMT=7)
    with pytest.raises(ConfigurationError, match="not a flask-guardian setting"):
        init(GUARDIAN_RECORDING_LIMIT=7)  # the database strategy does not declare it
    # The jwt strategy's keys are known whichever strategy runs, and read only by it.
    assert settings_of(init(GUARDIAN_JWT_CACHE_SIZE=-1)).strategy_options is None
    with pytest.raises(ConfigurationError, match="GUARDIAN_JWT_CACHE_SIZE"):
        init(GUARDIAN_JWT_CACHE_SIZE=-1, **JWT)


def test_a_second_init_app_on_one_app_fails_before_registering_anything() -> None:
    app = Flask("twice")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://")
    db = SQLAlchemy(app)
    guardian = Guardian(app, db=db)
    hooks = list(app.before_request_funcs.get(None, []))
    with pytest.raises(RuntimeError, match="already initialised"):
        guardian.init_app(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        Guardian(app, db=db)
    assert app.before_request_funcs.get(None, []) == hooks
    assert list(app.extensions) == ["sqlalchemy", "guardian"]
