"""The session's outbox in one process: producers, the overflow policy, backpressure.

Each session here is read by its own writer (``session.response``), as a server would read it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.test import AsyncRequestFactory

from stream_app import protocol
from stream_app.outbox import QueueFull
from stream_app.sessions import Session

factory = AsyncRequestFactory()


def make_session(**kw: Any) -> Session:
    return Session(factory.get("/sse/"), retry=None, keep_alive=None, **kw)


async def read_all(session: Session, timeout: float = 10) -> list[protocol.Event]:
    """Every event the writer sends until the stream ends."""
    events: list[protocol.Event] = []
    async with asyncio.timeout(timeout):
        async for chunk in session.response:
            events.extend(protocol.decode(chunk))
    return events


async def read_count(session: Session, count: int) -> list[protocol.Event]:
    """The first ``count`` events, then the session is closed."""
    events: list[protocol.Event] = []
    async with asyncio.timeout(10):
        async for chunk in session.response:
            assert session.queued <= session.max_queue
            events.extend(protocol.decode(chunk))
            if len(events) >= count:
                session.close()
    return events


def test_outbox_overflow_policy_is_close_or_raise() -> None:
    with pytest.raises(ValueError, match="overflow must be 'close' or 'raise'"):
        make_session(overflow="drop")


async def test_outbox_push_refuses_bytes() -> None:
    session = make_session()
    with pytest.raises(TypeError, match="decode it first"):
        session.push(b"raw")
    assert session.queued == 0


async def test_outbox_custom_serializer_and_sanitizer_shape_the_data() -> None:
    class Reversed:
        @staticmethod
        def dumps(data: Any) -> str:
            return json.dumps(data)[::-1]

    session = make_session(serializer=Reversed, sanitizer=lambda text: text.replace("<", "&lt;"))
    session.push({"a": "<b>"})
    session.push("<i>")
    session.close()
    # The serializer for data, the sanitizer for every text (a str skips the serializer).
    assert [e.data for e in await read_all(session)] == ['}">b&lt;" :"a"{', "&lt;i>"]


async def test_outbox_full_queue_raises_with_the_raise_policy_and_keeps_the_stream() -> None:
    session = make_session(max_queue=2, overflow="raise")
    assert session.push(1)
    assert session.push(2)
    with pytest.raises(QueueFull, match="2 events"):
        session.push(3)
    assert not session.is_closed
    session.close()
    assert [e.data for e in await read_all(session)] == ["1", "2"]


async def test_outbox_producers_after_the_end_return_false() -> None:
    session = make_session()
    session.close()
    assert not session.push("closing")
    await read_all(session)
    assert session.is_closed
    assert not session.put(session.encode("ended"))
    assert not await session.send("ended")
    assert not await session.iterate(["ended"])
    async with session.batch() as buffer:
        buffer.push("ended")
    assert not await session.flush(buffer)


async def test_outbox_iterate_an_async_source_waits_for_room() -> None:
    session = make_session(max_queue=2)

    async def numbers() -> AsyncIterator[int]:
        for i in range(7):
            yield i

    producer = asyncio.ensure_future(session.iterate(numbers(), event="n"))
    events = await read_count(session, 7)
    assert await producer
    assert [(e.event, e.data) for e in events] == [("n", str(i)) for i in range(7)]


async def test_outbox_iterate_stops_when_the_session_ends_while_it_waits() -> None:
    session = make_session(max_queue=2)
    producer = asyncio.ensure_future(session.iterate(range(100)))
    events = await read_count(session, 3)
    assert not await producer
    assert len(events) < 100


async def test_outbox_async_iterate_stops_when_the_session_ends() -> None:
    session = make_session(max_queue=1)

    async def endless() -> AsyncIterator[str]:
        while True:
            yield "tick"

    producer = asyncio.ensure_future(session.iterate(endless()))
    await read_count(session, 2)
    async with asyncio.timeout(5):
        assert not await producer


async def test_outbox_stream_sends_each_chunk_decoded_and_transformed() -> None:
    session = make_session(max_queue=1)

    async def chunks() -> AsyncIterator[str | bytes]:
        yield b"caf\xc3\xa9"
        yield "text"

    producer = asyncio.ensure_future(session.stream(chunks(), event="c", transform=str.upper))
    events = await read_count(session, 2)
    assert await producer
    assert [(e.event, e.data) for e in events] == [("c", "CAFÉ"), ("c", "TEXT")]


async def test_outbox_stream_stops_when_the_session_ends() -> None:
    session = make_session()
    session.close()
    await read_all(session)

    async def chunks() -> AsyncIterator[str]:
        yield "never sent"

    assert not await session.stream(chunks())


async def test_outbox_batch_call_queues_one_frame() -> None:
    session = make_session()

    async def fill(buffer: Any) -> None:
        buffer.push("a", event="x")
        buffer.comment("between")
        buffer.push({"b": 1})

    assert await session.batch_call(fill)
    assert session.queued == 1
    # An empty buffer queues nothing and says whether the session is still open.
    async with session.batch():
        pass
    assert session.queued == 1
    session.close()
    events = await read_all(session)
    assert [(e.event, e.data) for e in events] == [("x", "a"), (None, '{"b":1}')]


async def test_outbox_producers_learn_that_the_client_left() -> None:
    """A client that disconnects cancels the writer (Django raises CancelledError in the
    response iterator): every producer then returns False instead of queueing for nobody."""
    session = make_session()
    session.push("first")

    async def client() -> None:
        async for _chunk in session.response:
            pass

    reader = asyncio.ensure_future(client())
    for _ in range(100):
        if session.queued == 0:
            break
        await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert session.is_closed
    assert not session.push("gone")
    assert not await session.iterate(["gone"])
    assert not await session.send("gone")
