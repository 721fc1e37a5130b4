"""Encoding: turning pushed data into the text of a ``data:`` field."""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from . import protocol

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = [
    "KEEP_ALIVE_FRAME",
    "EventBuffer",
    "Serializer",
    "compact_json",
    "error_frame",
]

#: The keep-alive comment frame.
KEEP_ALIVE_FRAME = b":\n\n"


class Serializer:
    """Turns pushed data into the text of a ``data:`` field."""

    def dumps(self, data: Any) -> str:  # pragma: no cover - interface
        """Serialize ``data`` to text."""
        raise NotImplementedError


_json_encoder = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    check_circular=False,
    default=DjangoJSONEncoder().default,
)


def compact_json(data: Any) -> str:
    """Compact JSON with Django's encoder for dates, decimals, UUIDs and lazy strings.

    Exact ints (the commonest token payload) skip the encoder; the rest goes through one
    shared ``JSONEncoder`` whose C implementation handles the containers.
    """
    if type(data) is int:
        return str(data)
    return _json_encoder.encode(data)


class EventBuffer:
    """Events encoded into one buffer, queued together by ``Session.batch``."""

    __slots__ = ("_parts", "_session")

    def __init__(self, session: Outbox) -> None:
        self._session = session
        self._parts: list[bytes] = []

    def push(self, data: Any, event: str | None = None, id: str | None = None) -> None:
        """Add one event to the buffer."""
        self._parts.append(self._session.encode(data, event, id))

    def comment(self, text: str = "") -> None:
        """Add a comment line to the buffer."""
        self._parts.append(protocol.comment(text))

    def getvalue(self) -> bytes:
        """Everything buffered, as one frame."""
        return b"".join(self._parts)

    def clear(self) -> None:
        """Empty the buffer."""
        self._parts.clear()

    def __len__(self) -> int:
        return len(self._parts)


def error_frame(exc: BaseException) -> bytes:
    """The ``event: error`` frame for an exception raised after the first byte."""
    body: dict[str, Any] = {"message": "The stream failed.", "type": "internal_error"}
    if settings.DEBUG:
        body["message"] = f"{type(exc).__name__}: {exc}"
        body["traceback"] = traceback.format_exception(exc)
    return protocol.encode_data(compact_json(body), "error")
