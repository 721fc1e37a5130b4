"""A worker running a generation dies or stops: another worker continues the answer.

Real processes (daphne, uvicorn), a real Redis, the loopback fake upstream with a known
deterministic answer (``[tokens=N]``) paced by ``[delay=MS]`` so the fault lands mid-answer.
The upstream honours continuation: asked with a trailing assistant message holding the start
of the answer, it streams only the rest, so the final text is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from stream_app.backends.base import id_key
from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.conftest import RedisServer, Server
from tests.fake_openai import Call, FakeOpenAI
from tests.llm_support import (
    PostStream,
    chat_client_factory,  # noqa: F401 (fixture)
    expected_tokens,
    fake_openai,  # noqa: F401 (fixture)
    llm_env,
    page_history,
    token_text,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = {"Authorization": "Bearer test-token"}
TOKENS = 150
# Short heartbeats keep the tests short; a takeover waits at most TTL + one period.
LEASES = {"GENERATION_HEARTBEAT": 0.5, "GENERATION_HEARTBEAT_TTL": 2.0}


def env_for(fake: FakeOpenAI, redis_env: dict[str, str], **settings: float) -> dict[str, str]:
    """Workers on one Redis, the fake upstream as model, the given lease timings."""
    extra = {"STREAM_APP_JSON": json.dumps({**LEASES, **settings})}
    return llm_env(fake, STREAM_GENERATION_GRACE="10", **extra, **redis_env)


def warm(*servers: Server) -> None:
    """Load the page once per worker: imports stay out of the fault's timings."""
    for server in servers:
        assert httpx.get(f"{server.url}/", timeout=20).status_code == 200


def calls_of(fake: FakeOpenAI, marker: str) -> list[Call]:
    """The upstream requests of the question holding ``marker``."""
    return [
        c
        for c in fake.calls
        if c.path == "/v1/chat/completions"
        and any(marker in str(m.get("content")) for m in c.body.get("messages") or [])
    ]


def continuations(fake: FakeOpenAI, marker: str) -> list[Call]:
    """Those requests that continue a partial answer (a trailing assistant message)."""
    return [c for c in calls_of(fake, marker) if c.body["messages"][-1]["role"] == "assistant"]


async def close_quietly(stream: EventStream) -> None:
    """Close a stream whose server may have been killed."""
    with contextlib.suppress(httpx.HTTPError, OSError):
        await stream.close()


@dataclass
class Follower:
    """A client that reads one stream and reconnects to ``fallback`` with ``Last-Event-ID``.

    Like ``EventSource``: on a cut connection or a stream that ended without ``stop``, it
    reconnects with the last id it saw; ``stop`` says which event ends its reading.
    """

    stream: EventStream
    client: httpx.AsyncClient
    fallback: str
    stop: Any
    events: list[Event] = field(default_factory=list)
    reconnects: int = 0

    @property
    def last_id(self) -> str | None:
        """The last backend id received (what ``EventSource`` would send)."""
        ids = [e.id for e in self.events if e.id and id_key(e.id)]
        return ids[-1] if ids else None

    async def run(self, timeout: float = 60) -> list[Event]:
        """Read until ``stop``; bounded in time and reconnects."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = await self.stream.next_event(timeout=15)
            except (EOFError, httpx.HTTPError):
                await close_quietly(self.stream)
                assert time.monotonic() < deadline, "the stream never ended"
                self.reconnects += 1
                assert self.reconnects <= 10, "reconnected too often"
                await asyncio.sleep(0.1)
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                self.stream = await EventStream(
                    self.fallback, client=self.client, headers=headers
                ).open()
                assert self.stream.status_code == 200, f"{self.fallback}: {self.stream.status_code}"
                continue
            self.events.append(event)
            if self.stop(event):
                await close_quietly(self.stream)
                return self.events


def is_end(event: Event) -> bool:
    """The last event of a generation."""
    return event.event in ("done", "error")


def check_answer(events: list[Event], expected: str) -> None:
    """The whole answer exactly once: ids never repeat, text and ``done`` complete."""
    tokens = [e for e in events if e.event == "token"]
    ids = [e.id for e in tokens]
    assert len(set(ids)) == len(ids), "a token event was received twice"
    keys = [id_key(e.id or "") for e in events if e.id]
    assert keys == sorted(keys)
    assert token_text(events) == expected
    assert events[-1].event == "done"
    done = json.loads(events[-1].data or "")
    assert done["finish_reason"] == "stop"
    assert done["text"] == expected


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_kill_9_mid_answer_every_client_gets_the_whole_answer_and_every_broadcast(
    server_factory: Any,
    redis_env: dict[str, str],
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    env = env_for(fake_openai, redis_env)
    doomed, survivor = server_factory("uvicorn", env), server_factory("daphne", env)
    warm(doomed, survivor)
    client = await chat_client_factory(doomed.url)
    marker = uuid.uuid4().hex
    post = await PostStream(
        f"{doomed.url}/chat/send/",
        {"message": f"[tokens={TOKENS}] [delay=40] {marker}"},
        client=client,
    ).open()
    first = await post.next_event()
    meta = json.loads(first.data or "")
    path = meta["stream_url"]
    # Three watchers of the answer: the POST and a tab on the doomed worker, a tab on the other.
    answers = [
        Follower(post, client, f"{survivor.url}{path}", is_end, [first]),
        Follower(
            await EventStream(f"{doomed.url}{path}", client=client).open(),
            client,
            f"{survivor.url}{path}",
            is_end,
        ),
        Follower(
            await EventStream(f"{survivor.url}{path}", client=client).open(),
            client,
            f"{survivor.url}{path}",
            is_end,
        ),
    ]
    news_url = "/sse/?channel=news"
    news = []
    for base in (doomed.url, doomed.url, survivor.url):
        stream = await EventStream(f"{base}{news_url}", client=client).open()
        while (await stream.next_event()).event != "ready":
            pass
        news.append(
            Follower(stream, client, f"{survivor.url}{news_url}", lambda e: e.data == "bcast-end")
        )
    tasks = [asyncio.ensure_future(f.run()) for f in answers + news]
    published: list[tuple[str, str]] = []

    async def publish(data: str) -> None:
        response = await client.post(
            f"{survivor.url}/stream/publish/",
            json={"channel": "news", "data": data},
            headers=TOKEN,
        )
        assert response.status_code == 201
        published.append((response.json()["id"], data))

    try:
        for i in range(3):
            await publish(f"bcast-before-{i}")
        await wait_for(
            lambda: all(len([e for e in f.events if e.data == "bcast-before-2"]) for f in news),
            10,
            "broadcasts before the kill did not arrive",
        )
        await wait_for(
            lambda: sum(e.event == "token" for e in answers[0].events) >= 20,
            10,
            "tokens did not arrive",
        )
        doomed.stop(signal.SIGKILL)
        killed = time.monotonic()
        for i in range(8):
            await publish(f"bcast-during-{i}")
            await asyncio.sleep(0.25)
        results = await asyncio.wait_for(asyncio.gather(*tasks[:3]), 60)
        for i in range(3):
            await publish(f"bcast-after-{i}")
        await publish("bcast-end")
        heard = await asyncio.wait_for(asyncio.gather(*tasks[3:]), 30)
    finally:
        for task in tasks:
            task.cancel()
        for follower in answers + news:
            await close_quietly(follower.stream)
    expected = expected_tokens(TOKENS)
    for events in results:
        check_answer(events, expected)
    # The two clients of the dead worker reconnected; the survivor's tab never had to.
    assert answers[0].reconnects >= 1
    assert answers[1].reconnects >= 1
    assert answers[2].reconnects == 0
    # One continuation, sent the text published before the kill.
    (resumed,) = continuations(fake_openai, marker)
    assert expected.startswith(resumed.body["messages"][-1]["content"])
    assert resumed.opened_at - killed < 10
    for events in heard:
        got = [(e.id, e.data) for e in events if (e.data or "").startswith("bcast-")]
        assert len(set(got)) == len(got), "a broadcast was received twice"
        assert got == published
    assert news[0].reconnects >= 1
    assert news[2].reconnects == 0
    # The answer was saved whole by the worker that took over.
    async with httpx.AsyncClient(base_url=survivor.url, cookies=client.cookies) as same:
        history = await page_history(same)
    assert history[-1]["status"] == "done"
    assert history[-1]["content"] == expected


async def test_two_workers_resuming_an_orphan_at_once_take_it_over_once(
    server_factory: Any,
    redis_env: dict[str, str],
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    env = env_for(fake_openai, redis_env)
    doomed = server_factory("uvicorn", env)
    left, right = server_factory("daphne", env), server_factory("uvicorn", env)
    warm(doomed, left, right)
    client = await chat_client_factory(doomed.url)
    marker = uuid.uuid4().hex
    post = await PostStream(
        f"{doomed.url}/chat/send/",
        {"message": f"[tokens=80] [delay=30] {marker}"},
        client=client,
    ).open()
    events = [await post.next_event()]
    while sum(e.event == "token" for e in events) < 10:
        events.append(await post.next_event())
    meta = json.loads(events[0].data or "")
    doomed.stop(signal.SIGKILL)
    await close_quietly(post)
    # Wait until its heartbeat has expired: the generation is orphaned, nobody follows it.
    store = redis.Redis.from_url(redis_env["REDIS_URL"])
    beat = f"{redis_env['STREAM_KEY_PREFIX']}:lease:{{generation:{meta['id']}}}:beat"
    try:
        await wait_for(lambda: not store.exists(beat), 10, "the heartbeat never expired")
    finally:
        store.close()
    last = events[-1].id or ""

    async def resume(server: Server) -> list[Event]:
        async with EventStream(
            f"{server.url}{meta['stream_url']}", client=client, headers={"Last-Event-ID": last}
        ) as stream:
            assert stream.status_code == 200
            return await stream.read_all(timeout=15)

    # Three clients per worker, all at once: the claims really race, within and across workers.
    resumes = [resume(server) for server in (left, right) for _ in range(3)]
    everyone = await asyncio.wait_for(asyncio.gather(*resumes), 40)
    expected = expected_tokens(80)
    for rest in everyone:
        check_answer(events + rest, expected)
    assert len(continuations(fake_openai, marker)) == 1


async def test_sigterm_hands_the_generation_over_at_once(
    server_factory: Any,
    redis_env: dict[str, str],
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    # A heartbeat TTL far longer than the test: only a released lease allows a quick takeover.
    env = env_for(fake_openai, redis_env, GENERATION_HEARTBEAT=1.0, GENERATION_HEARTBEAT_TTL=60)
    stopping, survivor = server_factory("uvicorn", env), server_factory("daphne", env)
    warm(stopping, survivor)
    client = await chat_client_factory(stopping.url)
    marker = uuid.uuid4().hex
    post = await PostStream(
        f"{stopping.url}/chat/send/",
        {"message": f"[tokens={TOKENS}] [delay=40] {marker}"},
        client=client,
    ).open()
    events = [await post.next_event()]
    while sum(e.event == "token" for e in events) < 10:
        events.append(await post.next_event())
    first_call = calls_of(fake_openai, marker)[0]
    stopping.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    with contextlib.suppress(httpx.HTTPError):
        events += await post.read_all(timeout=15)
    await close_quietly(post)
    # Handed over: the upstream call was closed and no end was published.
    assert first_call.closed_at is not None
    assert not any(is_end(e) for e in events)
    url = f"{survivor.url}{json.loads(events[0].data or '')['stream_url']}"
    follower = Follower(
        await EventStream(
            url, client=client, headers={"Last-Event-ID": events[-1].id or ""}
        ).open(),
        client,
        url,
        is_end,
    )
    assert follower.stream.status_code == 200
    rest = await asyncio.wait_for(follower.run(), 30)
    check_answer(events + rest, expected_tokens(TOKENS))
    (resumed,) = continuations(fake_openai, marker)
    assert resumed.opened_at - signalled < 8
    assert await asyncio.to_thread(stopping.proc.wait, 15) is not None


async def test_redis_down_at_the_final_event_still_ends_every_stream(
    server_factory: Any,
    private_redis: RedisServer,
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    redis_env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": private_redis.url,
        "STREAM_KEY_PREFIX": f"end{uuid.uuid4().hex[:8]}",
    }
    env = env_for(fake_openai, redis_env)
    producer, other = server_factory("uvicorn", env), server_factory("daphne", env)
    warm(producer, other)
    client = await chat_client_factory(producer.url)
    # The upstream pauses after the last token: Redis dies exactly before the final event.
    post = await PostStream(
        f"{producer.url}/chat/send/",
        {"message": f"[tokens=5] [delay=20] [last=1500] {uuid.uuid4().hex}"},
        client=client,
    ).open()
    events = [await post.next_event()]
    path = json.loads(events[0].data or "")["stream_url"]
    watcher = await EventStream(f"{other.url}{path}", client=client).open()
    expected = expected_tokens(5)
    try:
        while token_text(events) != expected:
            events.append(await post.next_event(timeout=10))
        private_redis.kill()
        # The producer cannot publish what follows the tokens (the usage, or "done"): its own
        # client still gets exactly one end, and the stream ends.
        events += await asyncio.wait_for(post.read_all(timeout=10), 15)
        ends = [e for e in events if is_end(e)]
        assert len(ends) == 1
        assert events[-1] is ends[0]
        end = (ends[0].event, json.loads(ends[0].data or "").get("code"))
        # Redis is back: that end is published, so a client of another worker learns it...
        private_redis.start()
        seen = await asyncio.wait_for(watcher.read_all(timeout=15), 30)
        assert [(e.event, json.loads(e.data or "").get("code")) for e in seen if is_end(e)] == [end]
        assert is_end(seen[-1])
        # ...and so does one that resumes.
        last = [e.id for e in events if e.id][-1]
        async with EventStream(
            f"{other.url}{path}", client=client, headers={"Last-Event-ID": last}
        ) as resumed:
            assert resumed.status_code == 200
            again = await resumed.read_all(timeout=10)
        # Redis came back empty: history cannot show that nothing was lost before the end,
        # so the one replay path says so (a reset), as it does for an unfinished generation.
        assert again[0].event == "reset"
        assert json.loads(again[0].data or "")["reason"] == "history_expired"
        assert [(e.event, json.loads(e.data or "").get("code")) for e in again[1:]] == [end]
    finally:
        await close_quietly(post)
        await close_quietly(watcher)


async def test_lease_lost_while_redis_paused_the_producer_worker_continues_it(
    server_factory: Any,
    private_redis: RedisServer,
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    redis_env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": private_redis.url,
        "STREAM_KEY_PREFIX": f"paused{uuid.uuid4().hex[:8]}",
    }
    worker = server_factory("uvicorn", env_for(fake_openai, redis_env))
    warm(worker)
    client = await chat_client_factory(worker.url)
    # A token every 3 s: the next publish comes after the heartbeat's TTL (2 s) has passed.
    post = await PostStream(
        f"{worker.url}/chat/send/",
        {"message": f"[tokens=3] [delay=3000] {uuid.uuid4().hex}"},
        client=client,
    ).open()
    assert private_redis.proc is not None
    events: list[Event] = []
    try:
        while token_text(events) == "":
            events.append(await post.next_event(timeout=10))
        private_redis.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(3.5)
        private_redis.proc.send_signal(signal.SIGCONT)
        # The producer stopped (its lease may have been another worker's by then); this worker
        # follows it like one running elsewhere, takes it over and finishes it.
        events += await asyncio.wait_for(post.read_all(timeout=15), 30)
    finally:
        if private_redis.proc is not None:
            private_redis.proc.send_signal(signal.SIGCONT)
        await close_quietly(post)
    check_answer(events, expected_tokens(3))


async def test_history_lost_with_its_worker_ends_watchers_with_generation_lost(
    server_factory: Any,
    private_redis: RedisServer,
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    redis_env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": private_redis.url,
        "STREAM_KEY_PREFIX": f"lost{uuid.uuid4().hex[:8]}",
    }
    env = env_for(fake_openai, redis_env)
    doomed, other = server_factory("uvicorn", env), server_factory("daphne", env)
    warm(doomed, other)
    client = await chat_client_factory(doomed.url)
    post = await PostStream(
        f"{doomed.url}/chat/send/",
        {"message": f"[tokens=150] [delay=40] {uuid.uuid4().hex}"},
        client=client,
    ).open()
    first = await post.next_event()
    path = json.loads(first.data or "")["stream_url"]
    watcher = await EventStream(f"{other.url}{path}", client=client).open()
    try:
        while (await watcher.next_event()).event != "token":
            pass
        # Its worker and its history both go: nothing can finish the answer any more.
        doomed.stop(signal.SIGKILL)
        private_redis.kill()
        private_redis.start()
        rest = await asyncio.wait_for(watcher.read_all(timeout=15), 30)
    finally:
        await close_quietly(post)
        await close_quietly(watcher)
    assert [e.event for e in rest if is_end(e)] == ["error"]
    assert json.loads(rest[-1].data or "")["code"] == "generation_lost"
