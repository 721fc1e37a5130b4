"""An adapter over the project's Django Channels layer (``CHANNEL_LAYERS``).

For projects that already run Channels: broadcasts go out with ``group_send`` to the group
``stream_app.<channel>``, so the project's own consumers can join that group and receive them as
``{"type": "stream_app.event", "id", "event", "data"}`` messages.

What it cannot do: replay. A channel layer keeps no history, so a client reconnecting with
``Last-Event-ID`` gets a ``reset`` event and continues live. Delivery guarantees are the layer's:
``RedisChannelLayer`` drops messages past its ``capacity`` and forgets groups after
``group_expiry`` (this backend re-joins its groups every 10 minutes, and at once after a failed
``receive``, as when Redis restarted); ``RedisPubSubChannelLayer``
drops nothing but keeps no history. Callable filters are refused (they would cross processes).

The listener never cancels ``layer.receive()`` (that loses messages): one pump task per process
reads the process's layer channel for as long as the process lives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from .. import protocol
from ..extras import MissingExtra

try:
    from channels.layers import get_channel_layer
except ImportError as exc:
    raise MissingExtra("channels", "The Channels backend") from exc

from ..conf import app_settings
from ..encoding import compact_json
from ..redact import redact
from ..tasks import spawn
from .base import Backend, BackendUnavailable, History, Message, id_key

__all__ = ["EVENT_TYPE", "ChannelsBackend", "group_name"]

logger = logging.getLogger("stream_app")
REJOIN_EVERY = 600.0
#: The ``type`` of the layer messages this backend sends and reads (handler ``stream_app_event``).
EVENT_TYPE = "stream_app.event"


def group_name(channel: str) -> str:
    """The Channels group of a stream channel (group names allow letters, digits, ``-_.``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else f"_{ord(c):x}_" for c in channel)
    return f"stream_app.{safe}"[:99]


class ChannelsBackend(Backend):
    """Publish through ``group_send``; one pump per process feeds the local fan-out."""

    keeps_history = False
    #: Read by the system check E008 (``CHANNEL_LAYERS`` must name the layer).
    needs_channel_layer = True

    def __init__(self) -> None:
        super().__init__()
        self.boot = time.time_ns() // 1_000_000
        self._seq = 0
        self._wanted: set[str] = set()
        self._joined: set[str] = set()
        self._name: str | None = None
        self._pump: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def layer(self) -> Any:
        """The configured channel layer."""
        layer = get_channel_layer(app_settings.CHANNEL_LAYER)
        if layer is None:
            raise BackendUnavailable(
                f"CHANNEL_LAYERS has no layer {app_settings.CHANNEL_LAYER!r} for stream_app"
            )
        return layer

    def _next_id(self) -> str:
        # Ids only need to be unique and ordered per publisher here: there is no replay.
        self._seq += 1
        return f"{self.boot}-{self._seq}"

    def _payload(self, message: Message) -> dict[str, Any]:
        if callable(message.filter):
            raise TypeError("a callable filter cannot cross a process")
        return {
            "type": EVENT_TYPE,
            "channel": message.channel,
            "id": message.id,
            "event": message.event,
            # Consumers get the value as published; browsers get ``text``.
            "data": json.loads(message.data) if message.is_json else message.data,
            "text": message.data,
            "filter": message.filter,
        }

    def _message(self, data: dict[str, Any]) -> Message:
        """A layer message as a ``Message``: ours carry ``text``; a project's own
        ``group_send`` may carry only ``channel`` and ``data`` (any JSON value)."""
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise ValueError("it names no channel")
        text = data.get("text")
        if not isinstance(text, str):
            value = data.get("data")
            if isinstance(value, bytes | bytearray):
                raise ValueError("its data is bytes")
            text = value if isinstance(value, str) else compact_json(value)
        event = data.get("event")
        # Refuse what could not be written as an SSE event before it reaches any session.
        protocol.encode_data("", event)
        event_id = data.get("id")
        if not (isinstance(event_id, str) and id_key(event_id)):
            event_id = self._next_id()
        return Message(channel, text, event, data.get("filter"), event_id)

    async def publish(self, message: Message) -> str:
        """``group_send`` to the channel's group."""
        message.id = self._next_id()
        payload = self._payload(message)
        try:
            await self.layer.group_send(group_name(message.channel), payload)
        # Whatever the layer raises when it cannot reach its store: OSError, or its client's own
        # (redis-py's ConnectionError is no OSError); channels names no common class.
        except Exception as exc:
            raise BackendUnavailable(
                f"the channel layer is unreachable: {redact(str(exc))}"
            ) from exc
        return message.id

    def publish_sync(self, message: Message) -> str:
        """``publish`` from sync code."""
        message.id = self._next_id()
        payload = self._payload(message)
        try:
            async_to_sync(self.layer.group_send)(group_name(message.channel), payload)
        except Exception as exc:  # as in publish
            raise BackendUnavailable(
                f"the channel layer is unreachable: {redact(str(exc))}"
            ) from exc
        return message.id

    def subscribe(self, channel: str) -> None:
        """Join the channel's group (and start the pump)."""
        self._wanted.add(channel)
        loop = asyncio.get_running_loop()
        if self._pump is None or self._pump.done() or self._loop is not loop:
            self._loop = loop
            self._joined.clear()
            self._name = None
            self._pump = asyncio.ensure_future(self._run())
        elif self._name is not None:
            spawn(self._join(channel))

    def unsubscribe(self, channel: str) -> None:
        """Leave the channel's group."""
        self._wanted.discard(channel)
        if self._name is not None and channel in self._joined:
            self._joined.discard(channel)
            spawn(self.layer.group_discard(group_name(channel), self._name))

    async def _join(self, channel: str) -> None:
        if self._name is not None and channel in self._wanted:
            await self.layer.group_add(group_name(channel), self._name)
            self._joined.add(channel)

    async def _run(self) -> None:
        layer = self.layer
        self._name = await layer.new_channel("stream_app.")
        rejoin = asyncio.ensure_future(self._rejoin())
        try:
            while True:
                try:
                    data = await layer.receive(self._name)
                except Exception as exc:  # as in publish
                    logger.warning("channel layer receive failed (%s); retrying", redact(str(exc)))
                    await asyncio.sleep(1.0)
                    # A restarted Redis forgot the groups: join them again now, not in 10 min.
                    await self._join_all()
                    continue
                if data.get("type") != EVENT_TYPE:
                    continue
                try:
                    message = self._message(data)
                except (ValueError, TypeError) as exc:
                    logger.warning(
                        "dropped a %s message from the channel layer: %s", EVENT_TYPE, exc
                    )
                    continue
                self.deliver(message)
        finally:
            rejoin.cancel()

    async def _join_all(self) -> None:
        for channel in list(self._wanted):
            try:
                await self._join(channel)
            except Exception as exc:  # as in publish
                logger.warning("could not join the group of %r: %s", channel, redact(str(exc)))

    async def _rejoin(self) -> None:
        while True:
            await self._join_all()
            await asyncio.sleep(REJOIN_EVERY)

    async def history(
        self, channels: Iterable[str], after: str | None, limit: int | None = None
    ) -> History:
        """No history: the client gets a ``reset`` event."""
        return History([], False)

    async def aclose(self) -> None:
        """Stop the pump."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
