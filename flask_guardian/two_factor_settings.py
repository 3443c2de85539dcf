"""The two-factor configuration keys: their defaults (each with its reason) and their
reader, wired into ``config.load_settings`` as ``Settings.two_factor``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .two_factor_crypto import SecretBox

#: Merged into ``config.DEFAULTS`` (docs/configuration.md repeats them).
TWO_FACTOR_DEFAULTS: dict[str, Any] = {
    # The name an authenticator app shows beside the account ("Example (ann@x.org)").
    # None: the host the enrolment page was served from.
    "GUARDIAN_TWO_FACTOR_ISSUER": None,
    # Earlier values of GUARDIAN_SECRET_KEY still accepted to decrypt two-factor secrets
    # after a rotation (with Flask's SECRET_KEY, Flask's own SECRET_KEY_FALLBACKS is read).
    "GUARDIAN_SECRET_KEY_FALLBACKS": [],
}

#: An issuer is shown to the user and goes into the otpauth:// URL; a colon would split it.
ISSUER_MAX_LENGTH = 100


@dataclass(frozen=True, slots=True)
class TwoFactorSettings:
    """What the two-factor modules read: the otpauth issuer (None: the request's host)
    and the box that seals the secrets."""

    issuer: str | None
    box: SecretBox


def read_two_factor_settings(config: Mapping[str, Any], values: Mapping[str, Any],
                             secret: bytes) -> TwoFactorSettings:
    """Check the two-factor keys. ``secret`` is the app's secret key as ``load_settings``
    read it (``GUARDIAN_SECRET_KEY`` when set, else Flask's ``SECRET_KEY``)."""
    issuer = values["GUARDIAN_TWO_FACTOR_ISSUER"]
    if issuer is not None and (
        not isinstance(issuer, str) or not issuer.strip() or ":" in issuer
        or len(issuer) > ISSUER_MAX_LENGTH or not issuer.isprintable()
    ):
        raise ConfigurationError(
            "GUARDIAN_TWO_FACTOR_ISSUER",
            f"expected None or a printable name of at most {ISSUER_MAX_LENGTH} characters "
            f"without ':', got {issuer!r}",
        )
    if config.get("GUARDIAN_SECRET_KEY"):  # the key load_settings took the secret from
        key = "GUARDIAN_SECRET_KEY_FALLBACKS"
    else:
        key = "SECRET_KEY_FALLBACKS"
        if config.get("GUARDIAN_SECRET_KEY_FALLBACKS"):
            raise ConfigurationError(
                "GUARDIAN_SECRET_KEY_FALLBACKS",
                "only used with GUARDIAN_SECRET_KEY; with Flask's SECRET_KEY put the old "
                "keys in Flask's SECRET_KEY_FALLBACKS",
            )
    fallbacks = config.get(key) or []
    if isinstance(fallbacks, str | bytes) or not isinstance(fallbacks, list | tuple):
        raise ConfigurationError(key, f"expected a list of old secret keys, got {fallbacks!r}")
    keys = [secret]
    for old in fallbacks:
        raw = old.encode("utf-8") if isinstance(old, str) else old
        if not isinstance(raw, bytes) or len(raw) < 16:
            raise ConfigurationError(
                key, "each old secret key must be a string or bytes of at least 16 bytes"
            )
        keys.append(raw)
    return TwoFactorSettings(issuer=issuer, box=SecretBox(tuple(keys)))
