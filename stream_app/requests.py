"""Request bodies: the one JSON parser every endpoint uses, and JSON answers to bad requests.

``read_json(request, max_bytes=...)`` returns the parsed body or raises ``BodyError``, whose
``response()`` is the JSON error to send (``{"error": code, "message": ...}``):

- 415 ``unsupported_media_type``: the ``Content-Type`` is not ``application/json`` (a
  ``charset`` other than UTF-8 included). Checked before anything reads the body, so a form
  or multipart body is never parsed by Django on the way (``require_json`` checks only this,
  for views that must look at the content type before a CSRF check reads ``request.POST``);
- 413 ``too_large``: over ``max_bytes`` or Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``, whichever
  is smaller. The body is read through ``request.read(limit + 1)``, never ``request.body``, so
  Django's ``RequestDataTooBig`` (an HTML 400 page) never fires and an understated or absent
  ``Content-Length`` cannot make the read unbounded;
- 400 ``invalid_request``: a ``Content-Length`` that is not a non-negative integer;
- 400 ``invalid_json`` (``loads``): not UTF-8 (RFC 8259 section 8.1; the standard library would
  also guess UTF-16 and UTF-32), not JSON, nested deeper than ``max_depth`` (checked before
  parsing, without recursion: the standard library recurses per level and fails with
  ``RecursionError`` near 1,000), ``NaN``/``Infinity`` or a number that overflows to infinity
  (``1e999``), an integer outside 64 bits (JSON integers reach databases and other languages;
  RFC 8259 section 6), or a ``\\uD800``-style escape that leaves a lone surrogate (such a string
  cannot be encoded as UTF-8: saving it, sending it upstream or streaming it would fail later).

``bad_request`` is a ``handler400`` that answers JSON for the errors Django raises itself before
any view runs (``DisallowedHost``, a form that cannot be parsed during a CSRF check, too many
fields): ``handler400 = "stream_app.requests.bad_request"`` in the project's root URLconf.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse, UnreadablePostError

__all__ = [
    "MAX_DEPTH",
    "BodyError",
    "InvalidJSON",
    "bad_request",
    "loads",
    "parse_ids",
    "read_json",
    "require_json",
]

#: Deepest nesting of arrays and objects accepted (filters allow 16; data rarely needs more).
MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# A JSON string, escapes included. One that never ends runs to the end of the text, so that
# a scan for the next token never restarts inside it (which would make the scan quadratic).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class InvalidJSON(ValueError):
    """Text that is not acceptable JSON; the message says why."""


class BodyError(Exception):
    """A request body refused before the view used it: the status, code and message to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JsonResponse:
        """The JSON error response: ``{"error": code, "message": message}``."""
        return JsonResponse({"error": self.code, "message": self.message}, status=self.status)


def _depth(text: str) -> int:
    """The deepest nesting of brackets outside strings, counted without recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _constant(name: str) -> Any:
    raise InvalidJSON(f"numbers must be finite, not {name}")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"numbers must be finite: {text[:20]} overflows")
    return value


def _int(text: str) -> int:
    # Checked on the digits first: int() of thousands of digits is slow, then refused anyway.
    if len(text) > 20 or not _INT_MIN <= (value := int(text)) <= _INT_MAX:
        raise InvalidJSON(f"integers must fit in 64 bits: {text[:20]}")
    return value


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text within the limits in the module docstring, or raise ``InvalidJSON``."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJSON(f"not UTF-8 (byte {exc.start})") from None
    else:
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJSON("a lone surrogate in the text") from None
    if not text.strip():
        raise InvalidJSON("empty")
    if text.count("[") + text.count("{") > max_depth and _depth(text) > max_depth:
        raise InvalidJSON(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except InvalidJSON:
        raise
    except ValueError as exc:
        raise InvalidJSON(f"not JSON ({exc})") from None
    if "\\u" in text:
        # Only an escape can leave a lone surrogate in text that decoded as UTF-8; writing the
        # value back out as UTF-8 finds one anywhere in it, keys included, at C speed.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJSON("a \\u escape leaves a lone surrogate") from None
    return value


def parse_ids(values: Iterable[object]) -> list[int]:
    """Database ids from request values: JSON integers or decimal text, positive, within 64 bits.

    Raises ``ValueError`` naming the first value that is not one (a bool is not an id, and an
    id past 64 bits would fail in the database query, not here).
    """
    ids = []
    for value in values:
        if type(value) is int:
            number = value
        elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
            number = int(value)
        else:
            raise ValueError(f"not an id: {str(value)[:20]!r}")
        if not 0 < number <= _INT_MAX:
            raise ValueError(f"not an id: {number}")
        ids.append(number)
    return ids


def require_json(request: HttpRequest) -> None:
    """Raise ``BodyError`` (415) unless the request says its body is UTF-8 JSON."""
    charset = (request.content_params or {}).get("charset") or "utf-8"
    if (request.content_type or "").lower() != "application/json" or charset.lower() not in (
        "utf-8",
        "utf8",
    ):
        raise BodyError(
            415, "unsupported_media_type", "send the body as Content-Type: application/json"
        )


def read_json(request: HttpRequest, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The request's JSON body, or ``BodyError`` with the status to answer (module docstring)."""
    require_json(request)
    limit = max_bytes
    if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None:
        limit = min(limit, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not (declared.isascii() and declared.isdigit()):
        raise BodyError(400, "invalid_request", "Content-Length is not a number")
    too_large = BodyError(413, "too_large", f"the body is larger than {limit} bytes")
    if int(declared) > limit:
        raise too_large
    try:
        data = request.read(limit + 1)
    except UnreadablePostError as exc:
        raise BodyError(400, "invalid_request", "the body could not be read") from exc
    if len(data) > limit:
        raise too_large
    try:
        return loads(data, max_depth=max_depth)
    except InvalidJSON as exc:
        raise BodyError(400, "invalid_json", f"invalid JSON body: {exc}") from None


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """A ``handler400`` that answers ``{"error": "bad_request", ...}`` instead of a page.

    The exception's text is not echoed: it can hold what the client sent (a ``Host`` header).
    """
    return JsonResponse(
        {"error": "bad_request", "message": "the request could not be processed"}, status=400
    )
