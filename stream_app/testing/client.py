"""``StreamClient``: Django's ``AsyncClient`` that also reads streams (``read_stream``)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from django.test import AsyncClient

from .exchange import read_stream
from .reader import StreamReader

__all__ = ["StreamClient"]


class StreamClient(AsyncClient):
    """An ``AsyncClient`` (log in, cookies, ``get``, ``post``) with ``read_stream``::

    async with stream_client.read_stream("/sse/?channel=news") as events:
        assert (await events.next()).event == "ready"
    """

    def read_stream(self, path: str, **options: Any) -> AbstractAsyncContextManager[StreamReader]:
        """``stream_app.testing.read_stream(self, path, **options)``."""
        return read_stream(self, path, **options)
