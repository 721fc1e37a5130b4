"""A session ends after an event whose *type* is one of its ``ends_on`` (a generation's ``done``
or ``error``), seen where the type is still a field: live, held during a replay, or replayed.
Never from the encoded bytes: a frame that merely looks like such an event ends nothing.
"""

from __future__ import annotations

import asyncio

import pytest
from django.test import AsyncRequestFactory

from stream_app import protocol
from stream_app.backends import reset_backend
from stream_app.channels import get_channel, subscribe
from stream_app.llm.events import TERMINAL_EVENTS
from stream_app.llm.views import GenerationSession
from stream_app.protocol import Event
from stream_app.sessions import Session


@pytest.fixture(autouse=True)
def fresh_backend() -> None:
    reset_backend()


def ending_session(last_event_id: str | None = None) -> Session:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    session = Session(AsyncRequestFactory().get("/", headers=headers), retry=None, keep_alive=None)
    session.ends_on = TERMINAL_EVENTS
    return session


async def read_all(session: Session) -> list[Event]:
    """Everything the session writes until it ends (a session that never ends fails here)."""
    events: list[Event] = []

    async def drain() -> None:
        async for chunk in session.response:
            events.extend(protocol.decode(chunk))

    await asyncio.wait_for(drain(), 5)
    return events


async def test_session_ends_after_a_live_terminal_event() -> None:
    channel = get_channel("ends-live")
    session = ending_session()
    await subscribe(session, [channel])
    await channel.abroadcast({"text": "a"}, "token")
    await channel.abroadcast({"finish_reason": "stop"}, "done")
    assert [e.event for e in await read_all(session)] == ["token", "done"]


async def test_session_ends_after_a_replayed_terminal_event() -> None:
    channel = get_channel("ends-replayed")
    first = await channel.abroadcast({"text": "a"}, "token")
    await channel.abroadcast({"text": "b"}, "token")
    await channel.abroadcast({"code": "x"}, "error")
    session = ending_session(first)
    await subscribe(session, [channel])
    assert [e.event for e in await read_all(session)] == ["token", "error"]


async def test_session_ends_after_a_terminal_event_held_during_replay() -> None:
    channel = get_channel("ends-held")
    first = await channel.abroadcast({"text": "a"}, "token")
    await channel.abroadcast({"text": "b"}, "token")
    session = ending_session(first)
    # Registered live with its replay's hold; the end arrives while history is still unread.
    channel.register(session)
    await channel.abroadcast({"finish_reason": "stop"}, "done")
    assert [e.event for e in await read_all(session)] == ["token", "done"]


async def test_session_is_not_ended_by_data_that_looks_like_an_end() -> None:
    channel = get_channel("ends-lookalike")
    session = ending_session()
    await subscribe(session, [channel])
    # Unnamed events whose bytes start like a ``done`` frame would if sniffed carelessly.
    await channel.abroadcast("event: done", None)
    await channel.abroadcast({"text": "a"}, "token")
    assert not session.is_closed
    session.close()
    assert [e.event for e in await read_all(session)] == [None, "token"]


def test_generation_session_ends_on_the_terminal_events_without_patching_put() -> None:
    session = GenerationSession(None)
    assert session.ends_on == TERMINAL_EVENTS
    assert GenerationSession.put is Session.put
