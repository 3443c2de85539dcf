"""The settings of the API tokens (SPEC §11, ``docs/api-tokens.md``): their keys, the
default of each with its reason, and their reader, kept beside the feature rather than in
``config.py``, which only wires them in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .config_values import check_seconds

#: Default values, each with the reason it was chosen (docs/configuration.md repeats them).
API_TOKEN_DEFAULTS: dict[str, Any] = {
    # Seconds an access token lives. It is verified without a database read, so in another
    # process without Redis a revoked session's access token may live this long at most
    # (database and redis strategies; the jwt strategy's revocation feed is quicker):
    # five minutes, as the OAuth 2.0 Security BCP suggests for bearer tokens.
    "GUARDIAN_ACCESS_TOKEN_TTL": 300,
    # Seconds after a refresh token was spent in which presenting it again returns the
    # same new pair (a client retrying after a network error) instead of counting as
    # theft: long enough for a retry, short for a thief.
    "GUARDIAN_REFRESH_REUSE_GRACE": 10,
}

#: The longest access token accepted: an hour (a longer one is a refresh token's job).
MAX_ACCESS_TOKEN_TTL = 3600
#: The longest reuse grace: a minute (past it a replay is theft).
MAX_REFRESH_REUSE_GRACE = 60


class ApiTokenSettings(NamedTuple):
    """``GUARDIAN_ACCESS_TOKEN_TTL`` and ``GUARDIAN_REFRESH_REUSE_GRACE``, validated."""

    access_ttl: int
    reuse_grace: int


#: What the defaults read as.
DEFAULT_API_TOKENS = ApiTokenSettings(300, 10)


def read_api_token_settings(values: Mapping[str, Any]) -> ApiTokenSettings:
    """Read both keys (``values`` has every default filled in); raises
    :class:`~flask_guardian.errors.ConfigurationError` naming the key."""
    return ApiTokenSettings(
        int(check_seconds("GUARDIAN_ACCESS_TOKEN_TTL", values["GUARDIAN_ACCESS_TOKEN_TTL"],
                          whole=True, minimum=10, maximum=MAX_ACCESS_TOKEN_TTL)),
        int(check_seconds("GUARDIAN_REFRESH_REUSE_GRACE",
                          values["GUARDIAN_REFRESH_REUSE_GRACE"], whole=True, minimum=0,
                          maximum=MAX_REFRESH_REUSE_GRACE)),
    )
