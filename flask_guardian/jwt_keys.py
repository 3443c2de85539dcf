"""JWT keys from configuration: the algorithms flask-guardian accepts, the HMAC secrets and
PEM key pairs (``GUARDIAN_JWT_SECRET``, ``GUARDIAN_JWT_PRIVATE_KEY``/``PUBLIC_KEY``,
``GUARDIAN_JWT_KEYS`` for rotation by ``kid``), read and checked once at ``init_app``.
Keys only ever come from configuration, never from a token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_HMAC_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class JWTKey:
    """A key the jwt strategy signs or verifies with. ``signing`` is None for verify-only."""

    kid: str | None
    signing: Any
    verifying: Any


def _get(config: Mapping[str, Any], key: str) -> Any:
    return config.get(key)


def _secret_bytes(key: str, value: Any) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes) or len(value) < MIN_HMAC_KEY_BYTES:
        raise ConfigurationError(
            key, f"expected a secret of at least {MIN_HMAC_KEY_BYTES} bytes (str or bytes)"
        )
    return value


def _asymmetric_key(key: str, pem: Any, *, private: bool) -> Any:
    from cryptography.hazmat.primitives import serialization

    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    if not isinstance(pem, bytes):
        raise ConfigurationError(key, "expected a PEM-encoded key (str or bytes)")
    try:
        if private:
            return serialization.load_pem_private_key(pem, password=None)
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        kind = "private" if private else "public"
        raise ConfigurationError(key, f"not a readable PEM {kind} key: {exc}") from None


def read_jwt_keys(
    config: Mapping[str, Any], algorithm: str, needed: bool
) -> tuple[JWTKey, ...]:
    """The JWT keys the configuration gives (``GUARDIAN_JWT_KEYS``, or the single secret or
    key pair), first one signing; empty when none is given and none is ``needed``."""
    symmetric = algorithm in SYMMETRIC_ALGORITHMS
    entries = _get(config, "GUARDIAN_JWT_KEYS")
    if entries is not None:
        key = "GUARDIAN_JWT_KEYS"
        if isinstance(entries, (str, bytes, Mapping)) or not entries:
            raise ConfigurationError(key, "expected a non-empty list of dicts with 'kid'")
        keys: list[JWTKey] = []
        for index, entry in enumerate(entries):
            where = f"{key}[{index}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
                raise ConfigurationError(where, "expected a dict with a string 'kid'")
            if symmetric:
                secret = _secret_bytes(f"{where}['secret']", entry.get("secret"))
                keys.append(JWTKey(entry["kid"], secret, secret))
                continue
            private = entry.get("private_key")
            public = entry.get("public_key")
            if index == 0 and private is None:
                raise ConfigurationError(where, "the first key signs: it needs 'private_key'")
            signing = _asymmetric_key(f"{where}['private_key']", private, private=True) if (
                private is not None
            ) else None
            if public is not None:
                verifying = _asymmetric_key(f"{where}['public_key']", public, private=False)
            elif signing is not None:
                verifying = signing.public_key()
            else:
                raise ConfigurationError(where, "expected 'public_key' or 'private_key'")
            keys.append(JWTKey(entry["kid"], signing, verifying))
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise ConfigurationError(key, "each 'kid' must be unique")
        return tuple(keys)
    if symmetric:
        secret = _get(config, "GUARDIAN_JWT_SECRET")
        if secret is None and not needed:
            return ()
        if secret is None:
            raise ConfigurationError(
                "GUARDIAN_JWT_SECRET",
                f"the jwt strategy with {algorithm} needs a secret of at least "
                f"{MIN_HMAC_KEY_BYTES} bytes (or GUARDIAN_JWT_KEYS)",
            )
        value = _secret_bytes("GUARDIAN_JWT_SECRET", secret)
        return (JWTKey(None, value, value),)
    private_pem = _get(config, "GUARDIAN_JWT_PRIVATE_KEY")
    if private_pem is None:
        if not needed:
            return ()
        raise ConfigurationError(
            "GUARDIAN_JWT_PRIVATE_KEY",
            f"{algorithm} needs a PEM private key (or GUARDIAN_JWT_KEYS)",
        )
    signing = _asymmetric_key("GUARDIAN_JWT_PRIVATE_KEY", private_pem, private=True)
    public_pem = _get(config, "GUARDIAN_JWT_PUBLIC_KEY")
    verifying = (
        _asymmetric_key("GUARDIAN_JWT_PUBLIC_KEY", public_pem, private=False)
        if public_pem is not None
        else signing.public_key()
    )
    return (JWTKey(None, signing, verifying),)


def check_keys_match(keys: tuple[JWTKey, ...], algorithm: str) -> None:
    """Sign and verify a probe token so a key of the wrong type fails at start-up."""
    import jwt

    for jwt_key in keys:
        if jwt_key.signing is None:
            continue
        try:
            probe = jwt.encode({"probe": 1}, jwt_key.signing, algorithm=algorithm)
            jwt.decode(probe, jwt_key.verifying, algorithms=[algorithm])
        except Exception as exc:  # any failure means the key cannot serve this algorithm
            raise ConfigurationError(
                "GUARDIAN_JWT_KEYS" if jwt_key.kid else "GUARDIAN_JWT_PRIVATE_KEY",
                f"key {jwt_key.kid or '(default)'} cannot sign {algorithm}: {exc}",
            ) from None
