"""A project that runs Django Channels, set up as the README's Channels section says: its
``asgi.py`` (a ``ProtocolTypeRouter`` with ``lifespan`` routed to stream_app), a WebSocket
consumer beside SSE, on both channels-redis layers, under uvicorn ``--lifespan on`` and daphne."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from stream_app.backends.channels import EVENT_TYPE, group_name
from tests.conftest import ROOT, RedisServer, Server
from tests.test_backend_channels import Reader, channels_env, open_reader, publish

__all__ = ["channels_env"]  # the fixture, shared with test_backend_channels


class Socket:
    """A WebSocket client reading JSON messages in the background."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for text in self.connection:
            self.messages.append(json.loads(text))

    async def until(self, data: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for message in self.messages:
                if message["data"] == data:
                    return message
            if self.task.done():
                self.task.result()
                pytest.fail(f"the socket closed before {data!r}; got {self.messages}")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{data!r} never reached the socket; got {self.messages}")
            await asyncio.sleep(0.02)


async def both_joined(server: Server, sse: Reader, socket: Socket) -> None:
    """Publish probes until the SSE stream and the socket got one (groups are joined async)."""
    for attempt in range(50):
        probe = f"probe {attempt}"
        await publish(server, {"channel": "news", "data": probe})
        await asyncio.sleep(0.2)
        if sse.take_until(probe) is not None and any(m["data"] == probe for m in socket.messages):
            return
    pytest.fail("no probe reached both the stream and the socket")


def project_layer(layer_class: str, redis: RedisServer) -> Any:
    """The project's own layer object, as a Celery task or a script would have it."""
    if layer_class.endswith("RedisPubSubChannelLayer"):
        return RedisPubSubChannelLayer(hosts=[redis.url])
    return RedisChannelLayer(hosts=[redis.url])


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_channels_project_serves_sse_and_websockets_side_by_side(
    server_factory: Callable[..., Server],
    channels_env: dict[str, str],
    private_redis: RedisServer,
    kind: str,
) -> None:
    # uvicorn runs with --lifespan on (conftest): it refuses to start when lifespan is not routed.
    server = server_factory(kind, {**channels_env, "STREAM_CHANNELS_ROUTER": "1"})
    sse = await open_reader(server, "channel=news")
    connection = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/news/")
    socket = Socket(connection)
    layer = project_layer(channels_env["STREAM_CHANNEL_LAYER"], private_redis)
    try:
        await both_joined(server, sse, socket)

        response = await publish(server, {"channel": "news", "data": {"n": 1}, "event": "deal"})
        assert response.status_code == 201, response.text
        event_id = response.json()["id"]
        [event] = await sse.until('{"n":1}')
        assert (event.event, event.id) == ("deal", event_id)
        # The consumer gets the value as published, not its JSON text.
        assert await socket.until({"n": 1}) == {"id": event_id, "event": "deal", "data": {"n": 1}}

        # What the browser sends over the socket is broadcast to the SSE clients too.
        await connection.send(json.dumps({"text": "hi"}))
        [chat] = await sse.until('{"text":"hi"}')
        assert chat.event == "chat"
        assert (await socket.until({"text": "hi"}))["event"] == "chat"

        # Project code sending a dict straight to the group: JSON in the browser, not a repr.
        await layer.group_send(
            group_name("news"), {"type": EVENT_TYPE, "channel": "news", "data": {"n": 2}}
        )
        [raw] = await sse.until('{"n":2}')
        assert raw.id
        assert (await socket.until({"n": 2}))["event"] is None
    finally:
        await connection.close()
        await sse.close()
        socket.task.cancel()
        if hasattr(layer, "flush"):
            await layer.flush()
    server.stop(signal.SIGTERM)
    if kind == "uvicorn":
        log = server.log.read_text()
        assert "Application startup complete." in log
        assert "Application shutdown complete." in log


def test_readme_channels_asgi_is_the_tested_one() -> None:
    """Every line of the README's Channels ``asgi.py`` is in tests/channels_asgi.py (which adds
    only the test settings module), and the consumer block matches tests/channels_consumers.py."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- channels:(\S+) -->\n```python\n(.*?)```", readme, re.S)
    assert [name for name, _ in blocks] == ["asgi.py", "consumers.py"]
    files = {
        "asgi.py": (ROOT / "tests" / "channels_asgi.py").read_text(),
        "consumers.py": (ROOT / "tests" / "channels_consumers.py").read_text(),
    }
    for name, block in blocks:
        tested = {line.strip() for line in files[name].splitlines()}
        for line in block.splitlines():
            code = line.strip()
            if code and not code.startswith("#"):
                code = code.replace("myapp.consumers", "tests.channels_consumers")
                code = code.replace('"mysite.settings"', '"tests.server_settings"')
                assert code in tested, f"README {name}: {line!r} is not in the tested file"
