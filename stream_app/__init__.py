"""django-stream-llm: Server-Sent Events for async Django views.

The public names are re-exported lazily so that ``import stream_app`` stays cheap and works
before Django's settings are configured::

    from stream_app import create_session, broadcast, get_channel
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channels import Channel, abroadcast, broadcast, create_channel, get_channel
    from .protocol import Event
    from .responses import SSEResponse
    from .sessions import Session, create_response, create_session

#: The release, read by the build (pyproject.toml, [tool.setuptools.dynamic]).
__version__ = "0.1.0"

__all__ = [
    "Channel",
    "Event",
    "SSEResponse",
    "Session",
    "abroadcast",
    "broadcast",
    "create_channel",
    "create_response",
    "create_session",
    "get_channel",
]

_EXPORTS = {
    "Channel": "channels",
    "abroadcast": "channels",
    "broadcast": "channels",
    "create_channel": "channels",
    "get_channel": "channels",
    "Event": "protocol",
    "SSEResponse": "responses",
    "Session": "sessions",
    "create_response": "sessions",
    "create_session": "sessions",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream_app' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
