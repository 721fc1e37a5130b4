"""Credentials never leave the process: what we print or return shows ``***`` for passwords.

Every message that names the backend (a 503 body, a log line, an admin message, a health or
metrics answer) passes through ``redact`` or ``redact_url``: a URL keeps its scheme, user, host,
port and path, so the message still says *where*, and loses its password. The password of
``STREAM_APP["REDIS_URL"]`` and of ``REDIS_OPTIONS`` is also removed wherever else it appears
(a client library may quote it, decoded, in its own error text).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from .conf import app_settings

__all__ = ["MASK", "redact", "redact_url"]

MASK = "***"
# ``scheme://user:password@``: the password runs to the last ``@`` before the host part.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^/\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged when it has none)."""
    return _USERINFO.sub(rf"\g<head>:{MASK}@", url)


def _configured_passwords() -> list[str]:
    found: set[str] = set()
    try:
        password = urlsplit(str(app_settings.REDIS_URL)).password
    except ValueError:
        password = None
    if password:
        found |= {password, unquote(password)}
    # REDIS_OPTIONS may carry the data nodes' password and the sentinels' own.
    options = app_settings.REDIS_OPTIONS
    if isinstance(options, dict):
        sentinel = options.get("sentinel_kwargs")
        for source in (options, sentinel if isinstance(sentinel, dict) else {}):
            if isinstance(source.get("password"), str) and source["password"]:
                found.add(source["password"])
    return sorted(found, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it, and the configured Redis password
    wherever it appears, replaced by ``***``."""
    text = redact_url(text)
    for password in _configured_passwords():
        text = text.replace(password, MASK)
    return text
