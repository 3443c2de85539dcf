"""``redirectUrl`` checking: only same-origin relative paths are honoured (OWASP
Unvalidated Redirects cheat sheet). Everything else falls back to the default."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from flask import request

MAX_REDIRECT_LENGTH = 2048


def _is_local_path(value: str) -> bool:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return False  # CR/LF (header injection), NUL, tabs browsers strip
    if "\\" in value:
        return False  # browsers read "/\evil.com" as "//evil.com"
    if not value.startswith("/") or value.startswith("//"):
        return False  # "https:evil.com", "javascript:", "//evil.com", relative tricks
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return not parts.scheme and not parts.netloc


def safe_redirect(value: object, default: str) -> str:
    """``value`` when it is a same-origin relative path (``/dashboard?tab=1``), else
    ``default``. Checked raw and once percent-decoded, so ``/%2F%2Fevil.com`` and
    ``/%0d%0aSet-Cookie:`` are refused too. Never raises."""
    if not isinstance(value, str) or not value or len(value) > MAX_REDIRECT_LENGTH:
        return default
    if not _is_local_path(value) or not _is_local_path(unquote(value)):
        return default
    return value


def current_path() -> str:
    """The path and query of the current request, to come back to after signing in. Not
    ``request.full_path``: it decodes the query strictly, and a PEP 3333 server (uWSGI,
    mod_wsgi) may pass bytes that are not UTF-8; those are percent-encoded here."""
    query = request.query_string
    if not query:
        return request.path
    return request.path + "?" + quote(query, safe="/?:@&=+$,;%!~*'()")
