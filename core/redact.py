"""Mask secrets in free text before it is stored, logged or shown.

``redact(text)`` masks:

* the value of every environment variable whose name ends in ``_KEY``,
  ``_TOKEN``, ``_SECRET`` or ``PASSWORD`` (``OPENAI_API_KEY``, ``GITHUB_TOKEN``,
  ``PGPASSWORD``...) when the value is at least 6 characters long -- read at call
  time, so secrets set after import are covered too;
* every value handed to :func:`register_secret` in this process (what a ``secret('NAME')``
  template of an MCP server resolved to: a Prefect Secret block's value is in no
  environment variable);
* well-known credential shapes: ``sk-...``/``sk-ant-...`` (OpenAI, Anthropic),
  ``Bearer <token>``, GitHub/Slack/AWS/Google key formats;
* ``key=value`` / ``"key": "value"`` pairs whose key names a secret
  (``api_key``, ``x-api-key``, ``password``, ``token``, ``secret``...);
* passwords in URLs: ``postgresql://user:pass@host`` -> ``postgresql://user:***@host``.

The module has no dependencies; it is cheap enough for error paths (a few µs),
but it is not meant for every token of a streamed response.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Mapping

__all__ = ["redact", "redact_data", "redact_url", "register_secret", "mask_secrets", "secret_env_values",
           "install_log_redaction", "MASK"]

MASK = "***"
MIN_SECRET_LEN = 6
SECRET_NAME_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "PASSWORD")

# scheme://user:password@host  (user may be empty: redis://:pw@host)
_URL_USERINFO = re.compile(
    # the password runs to the last "@" of the authority: an unescaped "@" in a
    # password (invalid, but common) is masked whole
    r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^/\s]+)"
    r"(?=@[^@/\s?#]*(?:[/?#\s]|$))"
)

# (pattern, replacement) -- applied in order.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Anthropic / OpenAI style keys: sk-ant-..., sk-proj-..., sk-...
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{4,}"), "sk-ant-" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-" + MASK),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]+"), r"\1\2" + MASK),
    # GitHub, Slack, AWS access key ids, Google API keys
    (re.compile(r"\b(gh[pousr]_|github_pat_)[A-Za-z0-9_]{16,}"), r"\1" + MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), "xox-" + MASK),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), r"\1" + MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + MASK),
    # key=value, key: value, "key": "value" where the key names a secret
    (
        re.compile(
            r"(?i)(?P<key>\b(?:x-api-key|api[_-]?key|access[_-]?token|refresh[_-]?token|"
            r"auth[_-]?token|token|client[_-]?secret|secret[_-]?key|secret|password|passwd|pwd)"
            r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&,;)}\]]+)"
        ),
        r"\g<key>" + MASK,
    ),
)


_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask ``value`` from now on, wherever :func:`redact` or :func:`mask_secrets` runs in
    this process (values shorter than 6 characters are too common to mask)."""
    if isinstance(value, str) and len(value) >= MIN_SECRET_LEN:
        with _registered_lock:
            _registered.add(value)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables (and registered secrets), longest first."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if value
        and len(value) >= MIN_SECRET_LEN
        and name.upper().endswith(SECRET_NAME_SUFFIXES)
    }
    values |= _registered
    return sorted(values, key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """Only the exact secret values (secret-named variables, registered secrets) masked: for
    text that must otherwise stay as it is, such as a tool's result on its way to a model."""
    if not text or not isinstance(text, str):
        return text
    for value in secret_env_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_url(url: Any) -> Any:
    """Mask the password of a URL (``scheme://user:pass@host`` -> ``user:***@host``).

    Accepts a string or anything with a ``str()`` (a SQLAlchemy ``URL`` already
    renders its password as ``***``).  ``None`` is returned unchanged.
    """
    if url is None:
        return None
    text = url if isinstance(url, str) else str(url)
    return _URL_USERINFO.sub(lambda m: m.group("prefix") + MASK, text)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Return ``text`` with every secret masked as ``***``.

    ``None`` and empty strings are returned unchanged; other non-strings are
    converted with ``str()`` first.
    """
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    for value in secret_env_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    text = redact_url(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_factory_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process when it is made (its message formatted
    with its arguments, then masked), whatever handler ships it: the console, a file, or
    Prefect's API log handler. Idempotent."""
    global _factory_installed
    if _factory_installed:
        return
    import logging

    make = logging.getLogRecordFactory()

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave the record to its handler
            return record
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(redacting)
    _factory_installed = True
_SECRET_KEY = re.compile(r"(?i)(^|[_-])(api[_-]?key|x-api-key|token|access[_-]?token|secret|client[_-]?secret|"
                         r"password|passwd|pwd|authorization|auth|credentials?)$")


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like data, e.g. a tool call's arguments) with every string redacted and
    the value of every key that names a secret (``token``, ``api_key``, ``password``...) masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): MASK if isinstance(v, str) and v and _SECRET_KEY.search(str(k)) else redact_data(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value
