"""Fixtures and helpers shared by the LLM and chat tests (imported by those modules).

- ``fake_openai``: the loopback OpenAI/Anthropic-compatible server (``tests.fake_openai``),
  one per test session.
- ``llm_env``: environment for test servers whose LLM is that fake upstream.
- ``chat_client``: an httpx client that has loaded the chat page (session and CSRF cookies).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.fake_openai import FakeOpenAI

API_TOKEN = "test-api-token"


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """The fake upstream, started once per test session."""
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


def llm_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    """Server environment pointing the LLM at ``fake`` (plus ``extra`` variables)."""
    return {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "sk-fake",
        "OPENAI_MODEL": "fake-model",
        "CHAT_API_TOKEN": API_TOKEN,
        "STREAM_KEEP_ALIVE": "1",
        **extra,
    }


async def open_chat(base_url: str) -> httpx.AsyncClient:
    """A client that loaded the chat page: it holds the CSRF cookie and sends the token."""
    client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(15))
    page = await client.get("/")
    assert page.status_code == 200, page.text[:500]
    token = client.cookies.get("csrftoken")
    assert token, "the chat page sets the CSRF cookie"
    client.headers["X-CSRFToken"] = token
    return client


@pytest.fixture
async def chat_client_factory() -> AsyncIterator[object]:
    """Open chat clients on demand; each is closed at teardown."""
    clients: list[httpx.AsyncClient] = []

    async def factory(base_url: str) -> httpx.AsyncClient:
        client = await open_chat(base_url)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


def generation_id_of(events: list[object]) -> str:
    """The generation id announced by the first ``generation`` event."""
    for event in events:
        if getattr(event, "event", None) == "generation":
            match = re.search(r'"id":"([0-9a-f]{32})"', getattr(event, "data", "") or "")
            assert match
            return match.group(1)
    raise AssertionError("no generation event")


class PostStream(EventStream):
    """An ``EventStream`` opened with a POST of a JSON body (starting a generation)."""

    def __init__(self, url: str, body: Any, *, client: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(url, client=client, method="POST", **kwargs)
        self.body = body

    async def open(self) -> PostStream:
        """Send the POST and read the status line and headers."""
        self.opened_at = time.perf_counter()
        request = self.client.build_request("POST", self.url, headers=self.headers, json=self.body)
        self.response = await self.client.send(request, stream=True)
        self._iterator = self.response.aiter_raw()
        return self


def token_text(events: list[Event]) -> str:
    """The answer text carried by ``token`` events."""
    return "".join(json.loads(e.data or "")["text"] for e in events if e.event == "token")


def expected_tokens(count: int) -> str:
    """The text of the fake upstream's ``[tokens=N]`` answer."""
    return "".join(f"t{i} " for i in range(count))


async def read_until_tokens(stream: EventStream, count: int, timeout: float = 10) -> list[Event]:
    """Events until ``count`` tokens (coalesced text pieces) have arrived."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while sum(e.event == "token" for e in events) < count:
        assert time.monotonic() < deadline, "tokens did not arrive"
        events.append(await stream.next_event(timeout))
    return events


async def page_history(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The conversation the chat page renders for ``client``."""
    page = await client.get("/")
    match = re.search(r'<script id="history" type="application/json">(.*?)</script>', page.text)
    assert match, "the page embeds its history"
    history: list[dict[str, Any]] = json.loads(match.group(1))
    return history
