"""The Anthropic adapter: the real ``anthropic`` SDK against the fake server's ``/v1/messages``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

anthropic = pytest.importorskip("anthropic")

from stream_app.llm.anthropic import stream_anthropic  # noqa: E402
from stream_app.llm.events import Done, Error, Token, ToolCall, Usage  # noqa: E402
from tests.fake_openai import DEFAULT_TEXT, FakeOpenAI  # noqa: E402
from tests.llm_support import fake_openai  # noqa: E402, F401 (fixture)


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[object]:  # noqa: F811
    sdk = anthropic.AsyncAnthropic(base_url=fake_openai.root, api_key="sk-ant-fake", max_retries=0)
    yield sdk
    await sdk.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_stream_anthropic_text_streams_tokens_usage_and_done(client: object) -> None:
    events = [e async for e in stream_anthropic(ask("hi"), model="claude-fake", client=client)]  # type: ignore[arg-type]
    assert "".join(e.text for e in events if isinstance(e, Token)) == DEFAULT_TEXT
    assert [e for e in events if isinstance(e, Usage)] == [Usage(12, 20, 32)]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "end_turn"
    assert done.usage == Usage(12, 20, 32)
    assert done.ttft_ms is not None


async def test_stream_anthropic_tool_use_becomes_tool_calls(client: object) -> None:
    events = [e async for e in stream_anthropic(ask("[tools]"), model="m", client=client)]  # type: ignore[arg-type]
    calls = [e for e in events if isinstance(e, ToolCall)]
    complete = [c for c in calls if c.complete]
    assert [(c.index, c.id, c.name) for c in complete] == [(0, "toolu_1", "get_weather")]
    assert json.loads(complete[0].arguments) == {"city": "Paris"}
    assert [c.arguments for c in calls if not c.complete] == ["", '{"city":', '{"city": "Paris"}']
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "tool_use"


@pytest.mark.parametrize(
    ("tags", "code", "tokens"),
    [
        ("[status=429]", "rate_limited", 0),
        ("[status=500]", "upstream_error", 0),
        ("[error_mid=2]", "upstream_error", 2),
    ],
)
async def test_stream_anthropic_errors_map_to_codes(
    client: object, tags: str, code: str, tokens: int
) -> None:
    events = [e async for e in stream_anthropic(ask(tags), model="m", client=client)]  # type: ignore[arg-type]
    error = events[-1]
    assert isinstance(error, Error)
    assert error.code == code
    assert sum(isinstance(e, Token) for e in events) == tokens
    if code == "rate_limited":
        assert error.retry_after == 3.0
