"""What may be published on a channel: its name, the payload's size, the event type, the filter.

``Channel.broadcast`` builds every message here, so each refusal comes before anything is
published: an invalid channel name (``ChannelNameError``), a payload over
``MAX_MESSAGE_BYTES`` (``MessageTooLarge``), an event type that cannot go on the wire or is
reserved for stream_app's control messages (``CONTROL_PREFIX``), a malformed filter, or a
callable filter that would have to cross processes (``FilterError``).
"""

from __future__ import annotations

import re
from typing import Any

from . import protocol
from .backends.base import Message
from .conf import app_settings
from .encoding import compact_json
from .filters import FilterError, compile_filter

__all__ = [
    "CHANNEL_NAME_RE",
    "CONTROL_PREFIX",
    "ChannelNameError",
    "MessageTooLarge",
    "build_message",
    "validate_channel_name",
]

#: Letters, digits and ``_ - . : @``, 1 to 100 characters (``user:42``, ``generation:<uuid>``).
CHANNEL_NAME_RE = re.compile(r"[A-Za-z0-9_\-.:@]{1,100}")
#: Event types reserved for control messages between workers (``stream_app.channels``).
CONTROL_PREFIX = "stream_app."


class ChannelNameError(ValueError):
    """A channel name that is empty, too long or has characters outside ``CHANNEL_NAME_RE``."""


class MessageTooLarge(ValueError):
    """A payload larger than ``STREAM_APP["MAX_MESSAGE_BYTES"]``."""


def validate_channel_name(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise ChannelNameError."""
    if not isinstance(name, str) or not CHANNEL_NAME_RE.fullmatch(name):
        # The name comes from a client: echo a bounded part of it.
        shown = repr(name)
        if len(shown) > 110:
            shown = f"{shown[:100]}..."
        raise ChannelNameError(
            f"invalid channel name {shown}: use 1 to 100 letters, digits or _ - . : @"
        )
    return name


def build_message(
    channel: str, data: Any, event: str | None, filter: Any, id: str | None, *, local: bool
) -> Message:
    """The message to publish on ``channel``, or the error that refuses it (see above).

    ``local``: every recipient lives in this process, so a callable filter is allowed.
    """
    text = data if isinstance(data, str) else _serialize(data)
    if len(text) > app_settings.MAX_MESSAGE_BYTES // 4 and (
        len(text.encode()) > app_settings.MAX_MESSAGE_BYTES
    ):
        raise MessageTooLarge(
            f"payload is over STREAM_APP['MAX_MESSAGE_BYTES'] "
            f"({app_settings.MAX_MESSAGE_BYTES} bytes)"
        )
    if event is not None:
        if event.startswith(CONTROL_PREFIX):
            raise ValueError(
                f"event type {event!r} is reserved: types starting with "
                f"{CONTROL_PREFIX!r} are stream_app's own control messages"
            )
        # Refuse a bad event type before anything is published.
        protocol.encode_data("", event)
    if callable(filter):
        if not local:
            raise FilterError(
                "a callable filter cannot cross processes: this channel's backend "
                "delivers to other workers; pass filter data such as {'role': 'admin'}"
            )
    else:
        compile_filter(filter)
    return Message(channel, text, event, filter, id or "", is_json=not isinstance(data, str))


def _serialize(data: Any) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("broadcast() takes text or serializable data, not bytes")
    return compact_json(data)
