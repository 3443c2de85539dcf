"""Every configuration key, its default and its validation, in one place.

``load_settings`` runs once in ``init_app``; the request path reads attributes of the frozen
:class:`Settings`, never ``app.config`` strings.
"""

from __future__ import annotations

import difflib
import importlib
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import second_factor_config
from .api_token_settings import (
    API_TOKEN_DEFAULTS,
    DEFAULT_API_TOKENS,
    ApiTokenSettings,
    read_api_token_settings,
)
from .config_values import (
    check_seconds,
    read_bool,
    read_choice,
    read_duration,
    read_frame_options,
    read_int,
    read_path,
    read_redis_prefix,
    read_redis_url,
    read_timeout,
)
from .errors import ConfigurationError
from .fresh_config import FRESH_DEFAULTS, read_fresh_within
from .identifiers import read_login_fields
from .jwt_keys import (
    ASYMMETRIC_ALGORITHMS,
    SYMMETRIC_ALGORITHMS,
    JWTKey,
    check_keys_match,
    read_jwt_keys,
)
from .session_cache import CACHE_DEFAULTS, read_session_cache
from .signin_view import read_signin_view
from .two_factor_settings import TWO_FACTOR_DEFAULTS, TwoFactorSettings, read_two_factor_settings

if TYPE_CHECKING:
    from .strategies.base import SessionStrategy

#: Default values, each with the reason it was chosen (docs/configuration.md repeats them).
DEFAULTS: dict[str, Any] = {
    # The key CSRF tokens are signed with; when unset, Flask's SECRET_KEY is used.
    "GUARDIAN_SECRET_KEY": None,
    # The sign-in code step (second_factor_config.py has each key's reason).
    **second_factor_config.DEFAULTS,
    # Server-side sessions are revocable at once; JWT is opt-in.
    "SESSION_STRATEGY": "database",
    # ASVS 4.0.3 V3.3.2 level 2: re-authenticate after 12 hours whatever the activity...
    "GUARDIAN_SESSION_MAX_AGE": 12 * 3600,
    # ... or after 30 minutes without a request.
    "GUARDIAN_SESSION_IDLE_TIMEOUT": 30 * 60,
    # "Remember me": a cookie that outlives the browser, a session of up to 30 days that
    # ends after 7 days without a request (a persistent session still needs an idle bound).
    "GUARDIAN_REMEMBER_MAX_AGE": 30 * 24 * 3600,
    "GUARDIAN_REMEMBER_IDLE_TIMEOUT": 7 * 24 * 3600,
    # Refresh (last seen, idle deadline, re-issued JWT) at most every 5 minutes, so an
    # ordinary request writes nothing.
    "GUARDIAN_SESSION_UPDATE_AGE": 5 * 60,
    "GUARDIAN_COOKIE_NAME": None,
    "GUARDIAN_COOKIE_SECURE": True,
    "GUARDIAN_COOKIE_SAMESITE": "Lax",
    "GUARDIAN_COOKIE_DOMAIN": None,
    "GUARDIAN_COOKIE_PATH": "/",
    "GUARDIAN_URL_PREFIX": "/auth",
    "GUARDIAN_DEFAULT_REDIRECT": "/",
    "GUARDIAN_CSRF_ENABLED": True,
    "GUARDIAN_PROTECTED_ROUTES": {},
    "GUARDIAN_MAX_LOGIN_ATTEMPTS": 5,
    "GUARDIAN_LOCKOUT_DURATION": 900,
    # Per client IP: generous enough for an office behind one NAT, low enough to stop a
    # credential-stuffing run from one address.
    "GUARDIAN_IP_MAX_LOGIN_ATTEMPTS": 100,
    # OWASP ASVS V2.1.1 asks for at least 12 characters.
    "GUARDIAN_PASSWORD_MIN_LENGTH": 12,
    # Bytes (UTF-8). Longer passwords are refused before hashing (denial-of-service guard).
    "GUARDIAN_PASSWORD_MAX_LENGTH": 1024,
    # OWASP Password Storage cheat sheet: argon2id, m=19 MiB, t=2, p=1.
    "GUARDIAN_ARGON2_MEMORY_COST": 19456,
    "GUARDIAN_ARGON2_TIME_COST": 2,
    "GUARDIAN_ARGON2_PARALLELISM": 1,
    "GUARDIAN_ON_SUSPICIOUS_SESSION": "log",
    "GUARDIAN_MONITOR_IP_NETWORK": False,
    "GUARDIAN_JWT_ALGORITHM": "HS256",
    "GUARDIAN_JWT_SECRET": None,
    "GUARDIAN_JWT_PRIVATE_KEY": None,
    "GUARDIAN_JWT_PUBLIC_KEY": None,
    "GUARDIAN_JWT_KEYS": None,
    "GUARDIAN_JWT_ISSUER": None,
    "GUARDIAN_JWT_AUDIENCE": "flask-guardian",
    "GUARDIAN_JWT_LEEWAY": 0,
    "GUARDIAN_TOKEN_MAX_LENGTH": 4096,
    # Guardian's own pages may not be framed (clickjacking of the "End session" buttons,
    # OWASP Clickjacking cheat sheet): "DENY", "SAMEORIGIN", or None to send nothing.
    "GUARDIAN_FRAME_OPTIONS": "DENY",
    # The redis strategy's server (redis-py URL: redis://, rediss:// or unix://).
    "GUARDIAN_REDIS_URL": None,
    # Every key flask-guardian writes starts with this, so several apps (or test runs)
    # share one Redis without seeing each other's sessions.
    "GUARDIAN_REDIS_PREFIX": "guardian:",
    # Seconds a Redis connect or command may take: a session lookup is one GET that takes
    # well under a millisecond, so a stalled Redis answers 503 in bounded time.
    "GUARDIAN_REDIS_TIMEOUT": 2,
    **CACHE_DEFAULTS,  # the session cache's key: session_cache.py gives its default and why
    # Seconds a new database connection may take (set on the engine unless the app sets
    # its own connect_timeout): a database that accepts nothing costs seconds, not minutes.
    "GUARDIAN_DB_CONNECT_TIMEOUT": 3,
    # Seconds the extension's own reads (session lookup, revocation feed) may take, on the
    # server (statement timeout) and on the client (read timeout): one indexed query needs
    # milliseconds, so a stalled database yields a 503 in bounded time, not a hung worker.
    "GUARDIAN_DB_STATEMENT_TIMEOUT": 2,
    # The user columns a sign-in identifier is matched against, in order (identifiers.py).
    "GUARDIAN_LOGIN_FIELDS": ["email"],
    # Where login_required sends browsers (signin_view.py): None is the blueprint's page.
    "GUARDIAN_SIGNIN_VIEW": None,
    **FRESH_DEFAULTS,
    **TWO_FACTOR_DEFAULTS,  # each with its reason in two_factor_settings.py
}

@dataclass(frozen=True, slots=True)
class RouteRule:
    """One ``GUARDIAN_PROTECTED_ROUTES`` entry: a path prefix and the roles it needs."""

    prefix: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration of one app. Built by :func:`load_settings`."""

    strategy_class: type[SessionStrategy]
    secret_key: bytes
    max_age: int
    idle_timeout: int
    update_age: int
    cookie_name: str
    cookie_secure: bool
    cookie_samesite: str
    cookie_domain: str | None
    cookie_path: str
    csrf_cookie_name: str
    url_prefix: str
    default_redirect: str
    csrf_enabled: bool
    protected_routes: tuple[RouteRule, ...]
    max_login_attempts: int
    lockout_duration: int
    ip_max_login_attempts: int
    password_min_length: int
    password_max_length: int
    argon2_memory_cost: int
    argon2_time_cost: int
    argon2_parallelism: int
    on_suspicious_session: str
    monitor_ip_network: bool
    jwt_algorithm: str
    jwt_keys: tuple[JWTKey, ...]
    jwt_issuer: str
    jwt_audience: str
    jwt_leeway: int
    token_max_length: int
    #: ``(X-Frame-Options, Content-Security-Policy)`` for guardian's pages, or None.
    frame_headers: tuple[str, str] | None
    redis_url: str | None
    redis_prefix: str
    redis_timeout: float
    #: What the strategy's own ``read_options`` made of its ``config_keys``.
    strategy_options: Any = None
    db_connect_timeout: float | None = 3.0
    db_statement_timeout: float | None = 2.0
    login_fields: tuple[str, ...] = ("email",)
    signin_view: str | None = None
    #: The lifetimes of a session signed in with "remember me".
    remember_max_age: int = 30 * 24 * 3600
    remember_idle_timeout: int = 7 * 24 * 3600
    #: Seconds since sign-in within which ``fresh_login_required`` lets a session pass.
    fresh_within: int = 600
    two_factor: TwoFactorSettings | None = None
    second_factor: second_factor_config.SecondFactorSettings = second_factor_config.OFF
    #: The API tokens' lifetimes (api_token_settings.py).
    api_tokens: ApiTokenSettings = DEFAULT_API_TOKENS
    #: ``GUARDIAN_SESSION_CACHE``: None (off), or its channel, "postgresql" or "redis".
    session_cache: str | None = None


def _check_known_keys(config: Mapping[str, Any], strategy_class: type[SessionStrategy]) -> None:
    """Refuse a ``GUARDIAN_*`` key flask-guardian does not read: a typo must not silently
    keep the default (a misspelt session lifetime would leave sessions at 12 hours).
    Every key read is in ``DEFAULTS`` or a strategy's ``config_keys`` (the shipped ones'
    whichever runs, so switching strategy never makes a key an error);
    tests/test_config.py checks the package for others."""
    from .strategies import STRATEGIES

    known = set(DEFAULTS).union(API_TOKEN_DEFAULTS, strategy_class.config_keys,
                                *(s.config_keys for s in STRATEGIES.values()))
    for key in config:
        if isinstance(key, str) and key.startswith("GUARDIAN_") and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md"
            raise ConfigurationError(key, f"not a flask-guardian setting; {hint}")
def resolve_strategy(value: Any) -> type[SessionStrategy]:
    """Turn ``SESSION_STRATEGY`` (a name, a class or an import string) into a class."""
    from .strategies import STRATEGIES
    from .strategies.base import SessionStrategy

    key = "SESSION_STRATEGY"
    if isinstance(value, str) and value in STRATEGIES:
        return STRATEGIES[value]
    if isinstance(value, str) and ("." in value or ":" in value):
        module_name, _, attr = value.replace(":", ".").rpartition(".")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(key, f"cannot import {value!r}: {exc}") from None
    if isinstance(value, type) and issubclass(value, SessionStrategy):
        return value
    names = ", ".join(repr(n) for n in STRATEGIES)
    raise ConfigurationError(
        key,
        f"expected {names}, a SessionStrategy subclass or its import string, got {value!r}",
    )


def _routes(values: Mapping[str, Any]) -> tuple[RouteRule, ...]:
    key = "GUARDIAN_PROTECTED_ROUTES"
    value = values[key]
    if not isinstance(value, Mapping):
        raise ConfigurationError(key, f"expected a dict of path -> options, got {value!r}")
    rules = []
    for path, options in value.items():
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(key, f"route {path!r}: expected a path starting with '/'")
        if not isinstance(options, Mapping) or set(options) - {"roles"}:
            raise ConfigurationError(
                key, f"route {path!r}: expected a dict with the optional key 'roles'"
            )
        roles = options.get("roles", ())
        if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
            raise ConfigurationError(key, f"route {path!r}: 'roles' must be a list of strings")
        rules.append(RouteRule(path.rstrip("/") or "/", frozenset(roles)))
    # Longest prefix first, so the first match is the most specific rule.
    rules.sort(key=lambda r: len(r.prefix), reverse=True)
    return tuple(rules)


def load_settings(config: Mapping[str, Any]) -> Settings:
    """Validate ``config`` (an ``app.config``) and return the frozen settings.

    Raises :class:`ConfigurationError` naming the key and the accepted values.
    """
    strategy_class = resolve_strategy(config.get("SESSION_STRATEGY",
                                                 DEFAULTS["SESSION_STRATEGY"]))
    _check_known_keys(config, strategy_class)
    # Every key with its default filled in: what the readers of config_values.py take.
    values: Mapping[str, Any] = ChainMap(dict(config), DEFAULTS, API_TOKEN_DEFAULTS,
                                       dict(strategy_class.config_keys))

    # GUARDIAN_SECRET_KEY lets an app that does not use Flask's own cookie session leave
    # SECRET_KEY unset, and so not pay for Flask opening that session on every request.
    secret_name = "GUARDIAN_SECRET_KEY" if config.get("GUARDIAN_SECRET_KEY") else "SECRET_KEY"
    secret = config.get(secret_name)
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ConfigurationError(
            secret_name,
            "flask-guardian signs CSRF tokens with it: set at least 16 bytes "
            "(GUARDIAN_SECRET_KEY, or Flask's SECRET_KEY)",
        )

    max_age = read_duration(values, "GUARDIAN_SESSION_MAX_AGE", minimum=60)
    idle = read_duration(values, "GUARDIAN_SESSION_IDLE_TIMEOUT", minimum=60)
    update_age = read_duration(values, "GUARDIAN_SESSION_UPDATE_AGE", minimum=0)
    if update_age >= idle:
        raise ConfigurationError(
            "GUARDIAN_SESSION_UPDATE_AGE",
            f"must be smaller than GUARDIAN_SESSION_IDLE_TIMEOUT ({idle}), got {update_age}",
        )

    secure = read_bool(values, "GUARDIAN_COOKIE_SECURE")
    samesite = read_choice(values, "GUARDIAN_COOKIE_SAMESITE", ("Lax", "Strict", "None"))
    if samesite == "None" and not secure:
        raise ConfigurationError(
            "GUARDIAN_COOKIE_SAMESITE", "'None' requires GUARDIAN_COOKIE_SECURE = True"
        )
    domain = values["GUARDIAN_COOKIE_DOMAIN"]
    if domain is not None and (not isinstance(domain, str) or not domain):
        raise ConfigurationError("GUARDIAN_COOKIE_DOMAIN", "expected None or a domain name")
    cookie_path = read_path(values, "GUARDIAN_COOKIE_PATH")
    name = values["GUARDIAN_COOKIE_NAME"]
    host_prefix_ok = secure and domain is None and cookie_path == "/"
    if name is None:
        name = "__Host-guardian" if host_prefix_ok else "guardian"
    if not isinstance(name, str) or not name or any(c in name for c in ' ;,="\t\r\n'):
        raise ConfigurationError("GUARDIAN_COOKIE_NAME", f"not a valid cookie name: {name!r}")
    if name.startswith("__Host-") and not host_prefix_ok:
        raise ConfigurationError(
            "GUARDIAN_COOKIE_NAME",
            "a __Host- cookie needs GUARDIAN_COOKIE_SECURE = True, no domain and path '/'",
        )
    if name.startswith("__Secure-") and not secure:
        raise ConfigurationError(
            "GUARDIAN_COOKIE_NAME", "a __Secure- cookie needs GUARDIAN_COOKIE_SECURE = True"
        )
    csrf_cookie_name = f"{name}-csrf"

    algorithm = values["GUARDIAN_JWT_ALGORITHM"]
    if algorithm not in SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
        accepted = ", ".join(sorted(SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
        raise ConfigurationError(
            "GUARDIAN_JWT_ALGORITHM", f"expected one of {accepted}, got {algorithm!r}"
        )
    keys = read_jwt_keys(config, algorithm, needed=False)  # a strategy needing them says so
    check_keys_match(keys, algorithm)
    issuer = values["GUARDIAN_JWT_ISSUER"] or config.get("SERVER_NAME") or "flask-guardian"
    audience = values["GUARDIAN_JWT_AUDIENCE"]
    for key, value in (("GUARDIAN_JWT_ISSUER", issuer), ("GUARDIAN_JWT_AUDIENCE", audience)):
        if not isinstance(value, str) or not value:
            raise ConfigurationError(key, f"expected a non-empty string, got {value!r}")

    bounds = {key: read_timeout(values, key) for key in
              ("GUARDIAN_DB_CONNECT_TIMEOUT", "GUARDIAN_DB_STATEMENT_TIMEOUT")}

    min_len = read_int(values, "GUARDIAN_PASSWORD_MIN_LENGTH", minimum=1)
    max_len = read_int(values, "GUARDIAN_PASSWORD_MAX_LENGTH", minimum=min_len)
    memory = read_int(values, "GUARDIAN_ARGON2_MEMORY_COST", minimum=8)
    parallelism = read_int(values, "GUARDIAN_ARGON2_PARALLELISM", minimum=1)
    if memory < 8 * parallelism:
        raise ConfigurationError(
            "GUARDIAN_ARGON2_MEMORY_COST", "must be at least 8 KiB per lane of parallelism"
        )

    settings = Settings(
        strategy_class=strategy_class,
        secret_key=secret,
        max_age=max_age,
        idle_timeout=idle,
        update_age=update_age,
        cookie_name=name,
        cookie_secure=secure,
        cookie_samesite=samesite,
        cookie_domain=domain,
        cookie_path=cookie_path,
        csrf_cookie_name=csrf_cookie_name,
        url_prefix=read_path(values, "GUARDIAN_URL_PREFIX", allow_root=False),
        default_redirect=read_path(values, "GUARDIAN_DEFAULT_REDIRECT"),
        csrf_enabled=read_bool(values, "GUARDIAN_CSRF_ENABLED"),
        protected_routes=_routes(values),
        max_login_attempts=read_int(values, "GUARDIAN_MAX_LOGIN_ATTEMPTS", minimum=1),
        lockout_duration=read_duration(values, "GUARDIAN_LOCKOUT_DURATION", minimum=1),
        ip_max_login_attempts=read_int(values, "GUARDIAN_IP_MAX_LOGIN_ATTEMPTS", minimum=1),
        password_min_length=min_len,
        password_max_length=max_len,
        argon2_memory_cost=memory,
        argon2_time_cost=read_int(values, "GUARDIAN_ARGON2_TIME_COST", minimum=1),
        argon2_parallelism=parallelism,
        on_suspicious_session=read_choice(values, "GUARDIAN_ON_SUSPICIOUS_SESSION",
                                          ("log", "revoke")),
        monitor_ip_network=read_bool(values, "GUARDIAN_MONITOR_IP_NETWORK"),
        jwt_algorithm=algorithm,
        jwt_keys=keys,
        jwt_issuer=issuer,
        jwt_audience=audience,
        jwt_leeway=read_duration(values, "GUARDIAN_JWT_LEEWAY", minimum=0),
        token_max_length=read_int(values, "GUARDIAN_TOKEN_MAX_LENGTH", minimum=256),
        frame_headers=read_frame_options(values),
        redis_url=read_redis_url(values),
        redis_prefix=read_redis_prefix(values),
        redis_timeout=check_seconds("GUARDIAN_REDIS_TIMEOUT", values["GUARDIAN_REDIS_TIMEOUT"],
                                    whole=False, minimum=0.01, maximum=300),
        db_connect_timeout=bounds["GUARDIAN_DB_CONNECT_TIMEOUT"],
        db_statement_timeout=bounds["GUARDIAN_DB_STATEMENT_TIMEOUT"],
        login_fields=read_login_fields(
            config.get("GUARDIAN_LOGIN_FIELDS", DEFAULTS["GUARDIAN_LOGIN_FIELDS"])),
        signin_view=read_signin_view(config.get("GUARDIAN_SIGNIN_VIEW"),
                                     config.get("GUARDIAN_PROTECTED_ROUTES") or {}),
        remember_max_age=read_duration(values, "GUARDIAN_REMEMBER_MAX_AGE", minimum=60),
        remember_idle_timeout=read_duration(values, "GUARDIAN_REMEMBER_IDLE_TIMEOUT",
                                            minimum=max(60, update_age + 1)),
        fresh_within=read_fresh_within(values),
        two_factor=read_two_factor_settings(config, values, secret),
        second_factor=second_factor_config.read_settings(values),
        api_tokens=read_api_token_settings(values),
    )
    # The strategy checks its own keys last, with every common setting known.
    return replace(settings, strategy_options=strategy_class.read_options(values, settings),
                   session_cache=read_session_cache(values, strategy_class, settings.redis_url))

