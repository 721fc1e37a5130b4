"""Helpers to test SSE views: in process with no server, or over a socket to a real one.

In process (needs only Django)::

    from django.test import AsyncClient
    from stream_app.testing import read_stream

    async def test_news():
        async with read_stream(AsyncClient(), "/sse/?channel=news") as events:
            assert events.status_code == 200
            assert (await events.next()).event == "ready"
        # Leaving the block disconnected the client; the view's session has ended.

``read_stream`` takes Django's ``AsyncClient`` (or ``StreamClient``) or an ASGI application
(``stream_app.asgi.get_asgi_application()``). ``memory_backend()`` and
``record_broadcasts()`` isolate and record what a test publishes. The pytest plugin
(``stream_app.pytest_plugin``, registered under the ``pytest11`` entry point) turns them into
the ``stream_backend``, ``broadcasts`` and ``stream_client`` fixtures.

Over a socket, ``EventStream`` reads from a real server (daphne, uvicorn); it needs ``httpx``,
which the ``testing`` extra installs (``pip install "django-stream-llm[testing]"``), and is
imported only when used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .client import StreamClient
from .exchange import read_stream
from .reader import Headers, NotAnEventStream, StreamReader, StreamTimeout
from .recording import Broadcast, BroadcastRecorder, memory_backend, record_broadcasts

if TYPE_CHECKING:
    from .sockets import EventStream

__all__ = [
    "Broadcast",
    "BroadcastRecorder",
    "EventStream",
    "Headers",
    "NotAnEventStream",
    "StreamClient",
    "StreamReader",
    "StreamTimeout",
    "memory_backend",
    "read_stream",
    "record_broadcasts",
]


def __getattr__(name: str) -> Any:
    if name != "EventStream":
        raise AttributeError(f"module 'stream_app.testing' has no attribute {name!r}")
    # Without httpx: MissingExtra, naming the testing extra (as system check E008 words it).
    return import_module(".sockets", __name__).EventStream
