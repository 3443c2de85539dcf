"""``redirectUrl`` checking: only same-origin relative paths are honoured (OWASP
Unvalidated Redirects cheat sheet). Everything else falls back to the default."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

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
