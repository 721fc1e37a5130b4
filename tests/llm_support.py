"""Fixtures and helpers shared by the LLM and chat tests (imported by those modules).

- ``fake_openai``: the loopback OpenAI/Anthropic-compatible server (``tests.fake_openai``),
  one per test session.
- ``llm_env``: environment for test servers whose LLM is that fake upstream.
- ``chat_client``: an httpx client that has loaded the chat page (session and CSRF cookies).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

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
