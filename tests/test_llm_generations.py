"""Generations over real servers (memory backend): start, resume, watch, cancel, grace, save.

The chat's ``POST /chat/send/`` starts a generation against the fake upstream and streams it;
``/chat/generations/<id>/stream/`` and ``/cancel/`` are the library's views.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from project.chat.models import Message
from stream_app.backends.base import id_key
from stream_app.llm.offline import OfflineModel
from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.conftest import Server, start_server
from tests.fake_openai import FakeOpenAI
from tests.llm_support import (
    PostStream,
    chat_client_factory,  # noqa: F401 (fixture)
    expected_tokens,
    fake_openai,  # noqa: F401 (fixture)
    llm_env,
    page_history,
    read_until_tokens,
    token_text,
)

pytestmark = pytest.mark.django_db(transaction=True)
GRACE = 2.0


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def gen_server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> Iterator[Server]:
    """A server of each kind, its model the fake upstream, a short grace period."""
    server = start_server(request.param, llm_env(fake_openai, STREAM_GENERATION_GRACE=str(GRACE)))
    yield server
    server.stop()


def meta_of(events: list[Event]) -> dict[str, Any]:
    assert events[0].event == "generation"
    meta: dict[str, Any] = json.loads(events[0].data or "")
    return meta


def assert_ids_increase(events: list[Event]) -> None:
    keys = [id_key(e.id or "") for e in events]
    assert None not in keys
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


async def start(client: httpx.AsyncClient, text: str) -> tuple[PostStream, list[Event]]:
    """POST a question; returns the open stream and its first event (``generation``)."""
    stream = await PostStream("/chat/send/", {"message": text}, client=client).open()
    assert stream.status_code == 200
    first = await stream.next_event()
    return stream, [first]


async def test_generation_post_streams_then_saves_the_answer(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=30] hello")
    events += await stream.read_all()
    meta = meta_of(events)
    assert len(meta["id"]) == 32
    assert meta["stream_url"] == f"/chat/generations/{meta['id']}/stream/"
    assert meta["cancel_url"] == f"/chat/generations/{meta['id']}/cancel/"
    assert meta["model"] == "fake-model"
    assert meta["offline"] is False
    assert token_text(events) == expected_tokens(30)
    assert [e.event for e in events[-2:]] == ["usage", "done"]
    done = json.loads(events[-1].data or "")
    assert done["finish_reason"] == "stop"
    assert done["ttft_ms"] is not None
    assert_ids_increase(events)
    history = await page_history(client)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == "[tokens=30] hello"
    answer = history[1]
    assert answer["status"] == "done"
    assert answer["content"] == expected_tokens(30)
    assert answer["generation_id"] == meta["id"]
    assert answer["tokens"] == 30
    assert answer["ttft_ms"] == done["ttft_ms"]


async def test_generation_resume_with_last_event_id_loses_and_duplicates_nothing(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=200] [delay=5]")
    events += await read_until_tokens(stream, 3)
    await stream.close()
    meta = meta_of(events)
    last_id = events[-1].id
    assert last_id
    async with EventStream(
        f"{gen_server.url}{meta['stream_url']}",
        client=client,
        headers={"Last-Event-ID": last_id},
    ) as resumed:
        assert resumed.status_code == 200
        rest = await resumed.read_all()
    assert rest[-1].event == "done"
    assert rest[0].event != "generation"
    assert token_text(events) + token_text(rest) == expected_tokens(200)
    assert_ids_increase(events + rest)


async def test_generation_reload_replays_from_the_start_and_several_can_watch(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=150] [delay=5]")
    events += await read_until_tokens(stream, 2)
    meta = meta_of(events)
    url = f"{gen_server.url}{meta['stream_url']}"
    async with EventStream(url, client=client) as tab_a, EventStream(url, client=client) as tab_b:
        seen_a, seen_b, rest = await asyncio.gather(
            tab_a.read_all(), tab_b.read_all(), stream.read_all()
        )
    await stream.close()
    for watched in (seen_a, seen_b):
        assert watched[0].event == "generation"
        assert token_text(watched) == expected_tokens(150)
        assert watched[-1].event == "done"
    assert token_text(events + rest) == expected_tokens(150)
    assert [e.id for e in seen_a] == [e.id for e in seen_b]


async def test_generation_cancel_stops_the_upstream_and_saves_cancelled(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=3000] [delay=20]")
    events += await read_until_tokens(stream, 2)
    call = fake_openai.last_call()
    meta = meta_of(events)
    asked = time.monotonic()
    response = await client.post(meta["cancel_url"])
    assert response.status_code == 202
    events += await stream.read_all()
    await stream.close()
    done = json.loads(events[-1].data or "")
    assert events[-1].event == "done"
    assert done["finish_reason"] == "cancelled"
    assert done["cancel_reason"] == "user"
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, 5.0)
    assert closed is not None
    assert closed - asked < 1.0
    again = await client.post(meta["cancel_url"])
    assert again.status_code == 409
    history = await page_history(client)
    assert history[-1]["status"] == "cancelled"
    assert history[-1]["content"] == token_text(events)
    assert history[-1]["content"].startswith("t0 t1 ")


async def test_generation_of_another_owner_cannot_be_read_or_cancelled(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    owner = await chat_client_factory(gen_server.url)
    other = await chat_client_factory(gen_server.url)
    stream, events = await start(owner, "[tokens=400] [delay=10]")
    meta = meta_of(events)
    read = await other.get(meta["stream_url"])
    assert read.status_code == 204
    assert read.content == b""
    cancel = await other.post(meta["cancel_url"])
    assert cancel.status_code == 404
    assert cancel.json()["error"] == "unknown_generation"
    anonymous = await httpx.AsyncClient(base_url=gen_server.url).get(meta["stream_url"])
    assert anonymous.status_code == 204
    head = await owner.head(meta["stream_url"])
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert (await owner.post(meta["cancel_url"])).status_code == 202
    await stream.read_all()
    await stream.close()


@pytest.mark.parametrize("generation_id", [uuid.uuid4().hex, "not-an-id", "0" * 31])
async def test_generation_unknown_is_204(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
    generation_id: str,
) -> None:
    client = await chat_client_factory(gen_server.url)
    await client.post("/chat/new/")  # gives the client a session of its own
    response = await client.get(f"/chat/generations/{generation_id}/stream/")
    assert response.status_code == 204
    cancel = await client.post(f"/chat/generations/{generation_id}/cancel/")
    assert cancel.status_code == 404


async def test_generation_finished_and_fully_seen_is_204(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=5]")
    events += await stream.read_all()
    meta = meta_of(events)
    seen = await client.get(meta["stream_url"], headers={"Last-Event-ID": events[-1].id or ""})
    assert seen.status_code == 204
    async with EventStream(f"{gen_server.url}{meta['stream_url']}", client=client) as replay:
        replayed = await replay.read_all()
    assert [e.id for e in replayed] == [e.id for e in events]
    middle = events[3].id or ""
    async with EventStream(
        f"{gen_server.url}{meta['stream_url']}?lastEventId={middle}", client=client
    ) as tail:
        rest = await tail.read_all()
    assert [e.id for e in rest] == [e.id for e in events[4:]]


async def test_generation_without_listener_is_cancelled_after_the_grace_period(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=3000] [delay=20]")
    events += await read_until_tokens(stream, 2)
    call = fake_openai.last_call()
    await stream.close()
    left = time.monotonic()
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, GRACE + 5)
    assert closed is not None
    # Not before the grace period (the upstream kept going for a reload), and soon after it.
    assert GRACE - 0.3 <= closed - left <= GRACE + 2.5
    deadline = time.monotonic() + 5
    history = await page_history(client)
    while history[-1]["status"] == "streaming" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        history = await page_history(client)
    assert history[-1]["status"] == "cancelled"


async def test_generation_second_question_while_answering_is_409(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    stream, events = await start(client, "[tokens=400] [delay=10]")
    busy = await client.post("/chat/send/", json={"message": "another"})
    assert busy.status_code == 409
    assert busy.json()["error"] == "busy"
    await client.post(meta_of(events)["cancel_url"])
    await stream.read_all()
    await stream.close()


def observed(metrics: str) -> float:
    """How many generations the metrics endpoint has observed (the TTFT histogram's count)."""
    match = re.search(r"^stream_generation_ttft_seconds_count (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_generation_finished_is_observed_once_in_the_metrics(
    gen_server: Server,
    chat_client_factory: Any,  # noqa: F811
) -> None:
    client = await chat_client_factory(gen_server.url)
    before = observed((await client.get("/stream/metrics/")).text)
    stream, events = await start(client, "[tokens=20] metrics")
    events += await stream.read_all()
    await stream.close()
    assert events[-1].event == "done"
    after = observed((await client.get("/stream/metrics/")).text)
    assert after == before + 1


async def test_generation_shutdown_on_the_memory_backend_cancels_and_saves(
    django_db_setup: None,
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    # One process: there is no other worker to hand the generation to.
    server = start_server("uvicorn", llm_env(fake_openai))
    try:
        client = await chat_client_factory(server.url)
        stream, events = await start(client, "[tokens=3000] [delay=20]")
        events += await read_until_tokens(stream, 2)
        server.proc.send_signal(signal.SIGTERM)
        events += await stream.read_all()
        await stream.close()
        assert await asyncio.to_thread(server.proc.wait, 15) is not None
    finally:
        server.stop()
    done = json.loads(events[-1].data or "")
    assert (events[-1].event, done["finish_reason"]) == ("done", "cancelled")
    assert done["cancel_reason"] == "shutdown"
    answer = await Message.objects.aget(generation_id=meta_of(events)["id"])
    assert answer.status == Message.Status.CANCELLED
    assert answer.content == token_text(events)
    assert answer.content == done["text"]


@pytest.mark.parametrize("cut", [0, 1, 7, 40])
def test_generation_offline_model_continues_a_partial_answer(cut: int) -> None:
    model = OfflineModel()
    messages = [{"role": "user", "content": "How does resuming work?"}]
    tokens = model.tokens(model.answer(messages))
    prefix = "".join(tokens[:cut])
    request = {"messages": [*messages, {"role": "assistant", "content": prefix}], "stream": True}
    rest = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in model.chunks(request) if c["choices"]
    )
    assert prefix + rest == model.answer(messages)
    assert len(rest) < len(model.answer(messages)) or cut == 0
