"""The embedded offline model, through the real ``openai`` SDK (no network at all)."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from django.test import override_settings
from openai import AsyncOpenAI

from stream_app.llm.events import Done, Token, Usage
from stream_app.llm.offline import OFFLINE_BASE_URL, OfflineModel, OfflineTransport
from stream_app.llm.openai import client_config, get_client, is_offline, stream_chat


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def offline_client(rate: float) -> AsyncOpenAI:
    transport = OfflineTransport(rate=rate)
    return AsyncOpenAI(
        api_key="offline",
        base_url=OFFLINE_BASE_URL,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )


def test_offline_is_used_without_key_or_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_offline()
    assert client_config() == (None, None)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert not is_offline()
    monkeypatch.delenv("OPENAI_BASE_URL")
    with override_settings(STREAM_APP={"LLM_API_KEY": "sk-x"}):
        assert not is_offline()


async def test_offline_model_streams_through_the_same_adapter() -> None:
    with override_settings(STREAM_APP={"LLM_OFFLINE_RATE": 0}):
        client = get_client()
        assert str(client.base_url).startswith(OFFLINE_BASE_URL)
        events = [e async for e in stream_chat([{"role": "user", "content": "What is SSE?"}])]
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert "**offline model**" in text
    assert "_What is SSE?_" in text
    assert "```python" in text
    usage = next(e for e in events if isinstance(e, Usage))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert usage.completion_tokens == len(OfflineModel().tokens(text))
    assert usage.prompt_tokens == 3


async def test_offline_model_streams_at_its_token_rate() -> None:
    client = offline_client(rate=200)
    started = time.perf_counter()
    events = [e async for e in stream_chat([{"role": "user", "content": "hi"}], client=client)]
    elapsed = time.perf_counter() - started
    await client.close()
    tokens = sum(isinstance(e, Token) for e in events)
    assert tokens > 40
    # role chunk + tokens + finish chunk + usage chunk, each 5 ms apart.
    assert elapsed >= (tokens + 2) / 200 * 0.9
    done = events[-1]
    assert isinstance(done, Done)
    assert done.tokens_per_second is not None
    assert 120 < done.tokens_per_second < 260


async def test_offline_model_answers_greetings_and_non_streamed_requests() -> None:
    client = offline_client(rate=0)
    answer = await client.chat.completions.create(
        model="offline", messages=[{"role": "user", "content": "Hello!"}]
    )
    await client.close()
    content = answer.choices[0].message.content or ""
    assert content.startswith("Hello! I am the **offline model**")


async def test_offline_transport_refuses_other_paths() -> None:
    transport = OfflineTransport()
    async with httpx2.AsyncClient(transport=transport) as client:
        missing = await client.post(f"{OFFLINE_BASE_URL}/embeddings", json={})
        models = await client.get(f"{OFFLINE_BASE_URL}/models")
        broken = await client.post(f"{OFFLINE_BASE_URL}/chat/completions", content=b"{")
    assert missing.status_code == 404
    assert models.json()["data"][0]["id"] == "offline"
    assert broken.status_code == 400
    assert json.loads(broken.content)["error"]["type"] == "invalid_request_error"


def test_offline_answer_quotes_the_question_as_plain_text() -> None:
    answer = OfflineModel().answer([{"role": "user", "content": "what *is*\n  _this_?"}])
    assert "You asked: _what is this ?_" in answer
