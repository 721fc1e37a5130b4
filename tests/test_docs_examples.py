"""The docs' example views, as the pages include them, served by one real uvicorn server.

docs/tutorial/3-llm.md (tests/docs_examples/llm_ask.py and llm_chat.py): with no OpenAI key
the embedded offline model answers through the openai SDK, and a generation left mid-answer
resumes from its stream URL with Last-Event-ID. docs/how-to/sse-starlette.md
(tests/docs_examples/sse_starlette_after.py): Event items keep their type and id.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from stream_app.protocol import Decoder, Event
from stream_app.testing import EventStream
from tests.conftest import Server, start_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup: None) -> Iterator[Server]:
    server = start_server(
        "uvicorn",
        {
            "DJANGO_SETTINGS_MODULE": "tests.docs_examples.settings",
            # Slow enough that the generation is still running when the test resumes it.
            "STREAM_OFFLINE_RATE": "400",
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "",
        },
    )
    yield server
    server.stop()


async def test_tutorial_ask_streams_tokens_then_done(server: Server) -> None:
    async with EventStream(f"{server.url}/ask/?q=Tell+me+a+story", timeout=30) as stream:
        events = await stream.read_all(timeout=30)
    types = [e.event for e in events]
    assert types[-1] == "done", types
    assert "token" in types
    assert set(types) <= {"token", "usage", "done"}
    text = "".join(json.loads(e.data)["text"] for e in events if e.event == "token")
    assert text.strip()


async def test_tutorial_chat_generation_resumes_with_last_event_id(server: Server) -> None:
    token = secrets.token_hex(16)  # a CSRF secret: the cookie and the header must match
    headers = {
        "Cookie": f"csrftoken={token}",
        "X-CSRFToken": token,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    events: list[Event] = []
    decoder = Decoder()
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST", f"{server.url}/tutorial/chat/", content=b"q=Hello", headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        # Leave once the generation has started and sent its first token.
        async for chunk in response.aiter_raw():
            events += decoder.feed(chunk)
            if any(e.event == "token" for e in events):
                break
        cookie = response.headers.get("set-cookie", "")
    started, first = events[0], next(e for e in events if e.event == "token")
    assert started.event == "generation", events
    info = json.loads(started.data)
    assert info["stream_url"] == f"/chat/generations/{info['id']}/stream/"
    # Resume as EventSource would after a network cut: same browser session, Last-Event-ID.
    session_cookie = cookie.split(";", 1)[0]
    async with EventStream(
        f"{server.url}{info['stream_url']}",
        headers={"Cookie": session_cookie, "Last-Event-ID": str(first.id)},
        timeout=30,
    ) as resumed:
        rest = await resumed.read_all(timeout=30)
    assert rest[-1].event == "done", [e.event for e in rest]
    assert first.id not in [e.id for e in rest]
    text = json.loads(first.data)["text"] + "".join(
        json.loads(e.data)["text"] for e in rest if e.event == "token"
    )
    assert json.loads(rest[-1].data)["text"] == text


async def test_sse_starlette_migration_example_keeps_event_types_and_ids(server: Server) -> None:
    async with EventStream(f"{server.url}/numbers/", timeout=30) as stream:
        events = await stream.events(2, timeout=30)
    assert [(e.event, e.data, e.id) for e in events] == [("tick", "0", "0"), ("tick", "1", "1")]
