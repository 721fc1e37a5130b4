"""The Channels backend: in this process on channels' InMemoryChannelLayer, and across real
worker processes on both channels-redis layers against a private Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from channels.layers import channel_layers, get_channel_layer
from django.test import AsyncRequestFactory, override_settings

from stream_app import protocol
from stream_app.backends import get_backend, reset_backend
from stream_app.backends.base import BackendUnavailable, Message, id_key
from stream_app.backends.channels import ChannelsBackend, group_name
from stream_app.channels import get_channel, subscribe
from stream_app.checks import check_backend
from stream_app.sessions import Session
from stream_app.testing import EventStream
from tests.conftest import ROOT, RedisServer, Server

CHANNELS_BACKEND = "stream_app.backends.channels.ChannelsBackend"
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS_LAYERS = [
    "channels_redis.core.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer",
]
TOKEN = {"Authorization": "Bearer test-token"}
factory = AsyncRequestFactory()


@pytest.fixture
def in_memory_layer(settings: Any) -> Iterator[None]:
    """The Channels backend on a fresh InMemoryChannelLayer."""
    settings.CHANNEL_LAYERS = IN_MEMORY
    settings.STREAM_APP = {**settings.STREAM_APP, "BACKEND": CHANNELS_BACKEND}
    channel_layers.backends.clear()
    reset_backend()
    yield
    reset_backend()
    channel_layers.backends.clear()


def make_session(state: dict[str, Any] | None = None, **headers: str) -> Session:
    request = factory.get("/sse/", headers=headers)
    return Session(request, retry=None, keep_alive=None, state=state or {})


def received(session: Session) -> list[protocol.Event]:
    return protocol.decode(b"".join(session._queue))


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("channel", "group"),
    [
        ("news", "stream_app.news"),
        ("user:42", "stream_app.user_3a_42"),
        ("a.b-c_d", "stream_app.a.b-c_d"),
        ("me@example", "stream_app.me_40_example"),
        ("x" * 120, "stream_app." + "x" * 88),
    ],
)
def test_group_name_is_a_valid_channels_group(channel: str, group: str) -> None:
    assert group_name(channel) == group
    # Channels' own rule for group names: ASCII letters, digits, "-_.", shorter than 100.
    assert len(group) < 100
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in group)


@pytest.mark.usefixtures("in_memory_layer")
async def test_channels_broadcast_reaches_matching_sessions_and_project_consumers() -> None:
    layer = get_channel_layer()
    consumer = await layer.new_channel("project.")
    await layer.group_add(group_name("deals"), consumer)
    pro, free = make_session({"plan": "pro"}), make_session({"plan": "free"})
    channel = get_channel("deals")
    await subscribe(pro, [channel])
    await subscribe(free, [channel])
    assert isinstance(get_backend(), ChannelsBackend)
    # The pump joins the group in the background.
    await wait_for(lambda: len(layer.groups.get(group_name("deals"), {})) == 2, "the join")

    first = await channel.abroadcast({"n": 1}, "deal", filter={"plan": "pro"})
    await wait_for(lambda: len(received(pro)) == 1, "the filtered broadcast")
    [event] = received(pro)
    assert (event.event, event.data, event.id) == ("deal", '{"n":1}', first)
    # The project's consumer sees the same broadcast as a Channels message.
    message = await asyncio.wait_for(layer.receive(consumer), 5)
    # ``data`` is the value as published, ``text`` what the browser gets.
    assert message == {
        "type": "stream_app.event",
        "channel": "deals",
        "id": first,
        "event": "deal",
        "data": {"n": 1},
        "text": '{"n":1}',
        "filter": {"plan": "pro"},
    }

    second = await asyncio.to_thread(channel.broadcast, "for all")
    await wait_for(lambda: len(received(free)) == 1, "the sync broadcast")
    message = await asyncio.wait_for(layer.receive(consumer), 5)
    assert (message["data"], message["text"]) == ("for all", "for all")
    assert [(e.data, e.id) for e in received(free)] == [("for all", second)]
    assert [e.id for e in received(pro)] == [first, second]
    # Ids are unique and ordered per publisher.
    assert first != second
    assert int(first.split("-")[1]) < int(second.split("-")[1])


@pytest.mark.usefixtures("in_memory_layer")
async def test_channels_last_session_leaving_leaves_the_group() -> None:
    layer = get_channel_layer()
    session = make_session()
    channel = get_channel("leaving")
    await subscribe(session, [channel])
    await wait_for(lambda: bool(layer.groups.get(group_name("leaving"))), "the join")
    session.abandon()
    await wait_for(
        lambda: not layer.groups.get(group_name("leaving")), "the pump to leave the group"
    )
    await channel.abroadcast("after")
    await asyncio.sleep(0.1)
    assert received(session) == []


@pytest.mark.usefixtures("in_memory_layer")
async def test_channels_reconnect_with_last_event_id_gets_reset() -> None:
    channel = get_channel("no-replay")
    await channel.abroadcast("before")
    session = make_session(**{"Last-Event-ID": "1-1"})
    await subscribe(session, [channel])
    [event] = received(session)
    # Not "history_expired": this backend never keeps any history.
    assert event.event == "reset"
    assert json.loads(event.data)["reason"] == "history_unavailable"


@pytest.mark.usefixtures("in_memory_layer")
async def test_channels_events_sent_from_channels_code_reach_sessions() -> None:
    """A project's own ``group_send`` (a consumer, a Celery task) with a dict ``data`` reaches
    the browser as JSON; messages the pump cannot use are logged and skipped, the pump lives on."""
    layer = get_channel_layer()
    session = make_session()
    channel = get_channel("from-code")
    await subscribe(session, [channel])
    group = group_name("from-code")
    await wait_for(lambda: bool(layer.groups.get(group)), "the join")
    for bad in (
        {"type": "stream_app.event", "data": "no channel"},
        {"type": "stream_app.event", "channel": "from-code", "data": b"bytes"},
        {"type": "stream_app.event", "channel": "from-code", "data": "x", "event": "a\nb"},
    ):
        await layer.group_send(group, bad)
    await layer.group_send(
        group, {"type": "stream_app.event", "channel": "from-code", "data": {"n": 2}}
    )
    await layer.group_send(
        group,
        {"type": "stream_app.event", "channel": "from-code", "data": "text", "event": "note"},
    )
    await wait_for(lambda: len(received(session)) == 2, "the two good messages")
    first, second = received(session)
    assert (first.data, first.event) == ('{"n":2}', None)
    assert (second.data, second.event) == ("text", "note")
    # Each got an id, in order, so a reconnecting client can still say where it was.
    assert id_key(first.id) < id_key(second.id)  # type: ignore[operator]


def test_channels_backend_without_its_layer_is_a_system_check_error(settings: Any) -> None:
    settings.STREAM_APP = {**settings.STREAM_APP, "BACKEND": CHANNELS_BACKEND}
    settings.CHANNEL_LAYERS = {}
    assert [m.id for m in check_backend()] == ["stream_app.E009"]
    settings.CHANNEL_LAYERS = IN_MEMORY
    settings.STREAM_APP = {**settings.STREAM_APP, "CHANNEL_LAYER": "events"}
    [error] = check_backend()
    assert error.id == "stream_app.E009"
    assert "'events'" in error.msg
    settings.STREAM_APP = {**settings.STREAM_APP, "CHANNEL_LAYER": "default"}
    assert check_backend() == []


@pytest.mark.usefixtures("in_memory_layer")
async def test_channels_refuses_callable_filters() -> None:
    with pytest.raises(TypeError, match="callable filter cannot cross a process"):
        await get_backend().publish(Message("news", "x", None, lambda state: True))


async def test_channels_missing_layer_alias_is_unavailable(in_memory_layer: None) -> None:
    with (
        override_settings(STREAM_APP={"BACKEND": CHANNELS_BACKEND, "CHANNEL_LAYER": "nope"}),
        pytest.raises(BackendUnavailable, match="CHANNEL_LAYERS has no layer 'nope'"),
    ):
        await ChannelsBackend().publish(Message("news", "x"))


# -- real workers on channels-redis -------------------------------------------------------------


@pytest.fixture(params=REDIS_LAYERS, ids=["core", "pubsub"])
def channels_env(request: pytest.FixtureRequest, private_redis: RedisServer) -> dict[str, str]:
    return {
        "STREAM_BACKEND": "channels",
        "STREAM_CHANNEL_LAYER": request.param,
        "REDIS_URL": private_redis.url,
        "STREAM_KEEP_ALIVE": "0.3",
    }


class Reader:
    """Reads an open stream in the background (a read that times out would end it)."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.events: list[protocol.Event] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            event = await self.stream.next_event(60)
            # Looked up after the wait: take_until replaces the list.
            self.events.append(event)

    def take_until(self, data: str) -> list[protocol.Event] | None:
        """The events up to the first carrying ``data``, taken off; None if it has not come."""
        for index, event in enumerate(self.events):
            if event.data == data:
                taken, self.events = self.events[: index + 1], self.events[index + 1 :]
                return taken
        return None

    async def until(self, data: str, timeout: float = 10) -> list[protocol.Event]:
        deadline = asyncio.get_running_loop().time() + timeout
        while (taken := self.take_until(data)) is None:
            if self.task.done():
                self.task.result()
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{data!r} never arrived; got {self.events}")
            await asyncio.sleep(0.02)
        return taken

    async def close(self) -> None:
        self.task.cancel()
        await self.stream.close()


async def open_reader(server: Server, query: str) -> Reader:
    """Open a stream, wait for its ``ready`` event, then read it in the background."""
    stream = await EventStream(f"{server.url}/sse/?{query}").open()
    assert stream.status_code == 200
    while (await stream.next_event()).event != "ready":
        pass
    return Reader(stream)


async def publish(server: Server, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{server.url}/stream/publish/", json=body, headers=TOKEN)


async def probe_until_delivered(server: Server, readers: list[Reader], attempts: int = 50) -> None:
    """Publish probes until each stream got one: a worker joins a channel's group just after
    the stream's ``ready`` (and again after Redis forgot its groups)."""
    for attempt in range(attempts):
        probe = f"probe {attempt}"
        response = await publish(server, {"channel": "alpha", "data": probe})
        if response.status_code == 201:
            await asyncio.sleep(0.2)
            if all(reader.take_until(probe) is not None for reader in readers):
                return
        else:
            await asyncio.sleep(0.2)
    pytest.fail("no probe reached every stream")


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_channels_redis_broadcast_reaches_sessions_on_every_worker(
    server_factory: Callable[..., Server], channels_env: dict[str, str], settings: Any
) -> None:
    a, b = server_factory("daphne", channels_env), server_factory("uvicorn", channels_env)
    pro_a = await open_reader(a, "channel=alpha&plan=pro")
    free_b = await open_reader(b, "channel=alpha&plan=free")
    pro_b = await open_reader(b, "channel=alpha&plan=pro")
    try:
        await probe_until_delivered(a, [pro_a, free_b, pro_b])
        response = await publish(
            a, {"channel": "alpha", "data": {"n": 1}, "event": "deal", "filter": {"plan": "pro"}}
        )
        assert response.status_code == 201, response.text
        first = response.json()["id"]
        for reader in (pro_a, pro_b):
            event = (await reader.until('{"n":1}'))[-1]
            assert (event.event, event.id) == ("deal", first)
        # A publish from a plain process (no event loop) crosses the layer too.
        code = "import django; django.setup()\nfrom stream_app import broadcast\n"
        code += "print(broadcast('alpha', 'from a script'))\n"
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DJANGO_SETTINGS_MODULE": "tests.server_settings",
                "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"],
                **channels_env,
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        second = result.stdout.strip()
        for reader in (pro_a, pro_b):
            assert [event.id for event in await reader.until("from a script")] == [second]
        # The filter crossed the layer: the free session got the script's event only.
        assert [event.id for event in await free_b.until("from a script")] == [second]
    finally:
        for reader in (pro_a, free_b, pro_b):
            await reader.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_channels_redis_unreachable_layer_answers_503(
    server_factory: Callable[..., Server],
    channels_env: dict[str, str],
    private_redis: RedisServer,
) -> None:
    server = server_factory("uvicorn", channels_env)
    private_redis.kill()
    response = await publish(server, {"channel": "alpha", "data": "lost"})
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "backend_unavailable"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_channels_redis_delivery_resumes_after_a_redis_restart(
    server_factory: Callable[..., Server],
    channels_env: dict[str, str],
    private_redis: RedisServer,
) -> None:
    server = server_factory("daphne", channels_env)
    reader = await open_reader(server, "channel=alpha")
    try:
        await probe_until_delivered(server, [reader])
        private_redis.kill()
        private_redis.start()
        # The worker rejoins (the restarted Redis forgot the group) and its pump reads again.
        await probe_until_delivered(server, [reader], attempts=100)
    finally:
        await reader.close()
