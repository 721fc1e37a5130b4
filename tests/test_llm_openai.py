"""The OpenAI adapter: the real ``openai`` SDK against the loopback fake upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from stream_app.llm.events import Done, Error, RawChunk, Token, ToolCall, Usage
from stream_app.llm.openai import adapt_stream, stream_chat
from tests.conftest import free_port
from tests.fake_openai import DEFAULT_TEXT, FakeOpenAI
from tests.llm_support import fake_openai  # noqa: F401 (fixture)


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:  # noqa: F811
    sdk = AsyncOpenAI(base_url=fake_openai.url, api_key="sk-fake", max_retries=0, timeout=10)
    yield sdk
    await sdk.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def collect(source: AsyncIterator[object]) -> list[object]:
    return [event async for event in source]


async def test_stream_chat_text_streams_tokens_usage_and_done(client: AsyncOpenAI) -> None:
    events = await collect(stream_chat(ask("hi"), client=client, model="fake"))
    tokens = [e for e in events if isinstance(e, Token)]
    assert "".join(t.text for t in tokens) == DEFAULT_TEXT
    assert len(tokens) == len(DEFAULT_TEXT.split())
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage == [Usage(11, len(tokens), 11 + len(tokens))]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert done.usage == usage[0]
    assert done.tokens == len(tokens)
    assert done.ttft_ms is not None
    assert done.ttft_ms >= 0
    assert done.duration_ms >= done.ttft_ms
    assert [type(e) for e in events[-2:]] == [Usage, Done]


async def test_stream_chat_first_token_time_is_measured(client: AsyncOpenAI) -> None:
    events = await collect(stream_chat(ask("[first=300] [delay=20]"), client=client, model="f"))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.ttft_ms is not None
    assert 280 <= done.ttft_ms < 2000
    # 20 ms between tokens: about 50 tokens per second, not counting the first wait.
    assert done.tokens_per_second is not None
    assert 20 < done.tokens_per_second < 60


async def test_stream_chat_tool_calls_are_merged_per_index(client: AsyncOpenAI) -> None:
    events = await collect(stream_chat(ask("[tools]"), client=client, model="fake"))
    calls = [e for e in events if isinstance(e, ToolCall)]
    complete = [c for c in calls if c.complete]
    assert [(c.index, c.id, c.name) for c in complete] == [
        (0, "call_a", "get_weather"),
        (1, "call_b", "get_time"),
    ]
    assert json.loads(complete[0].arguments) == {"city": "Paris"}
    assert json.loads(complete[1].arguments) == {"tz": "UTC"}
    growing = [c.arguments for c in calls if c.index == 0 and not c.complete]
    assert growing == ["", '{"city"', '{"city": "Par', '{"city": "Paris"}']
    # The first call is reported complete as soon as the second one starts.
    first_done = calls.index(complete[0])
    assert all(c.index == 0 for c in calls[:first_done])
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "tool_calls"


async def test_stream_chat_raw_chunks_precede_their_events(client: AsyncOpenAI) -> None:
    events = await collect(stream_chat(ask("hi"), client=client, model="fake", raw=True))
    raws = [e for e in events if isinstance(e, RawChunk)]
    first_token = next(i for i, e in enumerate(events) if isinstance(e, Token))
    assert isinstance(events[first_token - 1], RawChunk)
    assert json.loads(events[first_token - 1].json)["choices"][0]["delta"]["content"] == "Hello"
    assert [r.usage_only for r in raws].count(True) == 1
    assert raws[-1].usage_only


@pytest.mark.parametrize(
    ("tags", "code", "status", "tokens_before"),
    [
        ("[status=429]", "rate_limited", 429, 0),
        ("[status=500]", "upstream_error", 502, 0),
        ("[status=401]", "upstream_auth", 502, 0),
        ("[status=400]", "bad_request", 400, 0),
        ("[error_mid=3]", "upstream_error", 502, 3),
        ("[drop=2]", "upstream_unavailable", 502, 2),
    ],
)
async def test_stream_chat_errors_map_to_codes(
    client: AsyncOpenAI, tags: str, code: str, status: int, tokens_before: int
) -> None:
    events = await collect(stream_chat(ask(tags), client=client, model="fake"))
    error = events[-1]
    assert isinstance(error, Error)
    assert (error.code, error.status) == (code, status)
    assert sum(isinstance(e, Token) for e in events) == tokens_before
    assert not any(isinstance(e, Done) for e in events)
    assert error.message
    assert "Traceback" not in error.message


async def test_stream_chat_rate_limit_carries_retry_after(client: AsyncOpenAI) -> None:
    events = await collect(stream_chat(ask("[status=429]"), client=client, model="fake"))
    error = events[-1]
    assert isinstance(error, Error)
    assert error.retry_after == 7.0
    assert error.payload() == {
        "code": "rate_limited",
        "message": error.message,
        "retry_after": 7.0,
        "upstream_status": 429,
    }


async def test_stream_chat_unreachable_upstream_is_upstream_unavailable() -> None:
    sdk = AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="x", max_retries=0)
    try:
        events = await collect(stream_chat(ask("hi"), client=sdk, model="fake"))
    finally:
        await sdk.close()
    assert len(events) == 1
    assert isinstance(events[0], Error)
    assert events[0].code == "upstream_unavailable"


async def test_stream_chat_slow_upstream_is_timeout(fake_openai: FakeOpenAI) -> None:  # noqa: F811
    sdk = AsyncOpenAI(base_url=fake_openai.url, api_key="x", max_retries=0, timeout=0.3)
    try:
        events = await collect(stream_chat(ask("[tokens=5] [delay=1500]"), client=sdk, model="f"))
    finally:
        await sdk.close()
    error = events[-1]
    assert isinstance(error, Error)
    assert (error.code, error.status) == ("timeout", 504)


async def test_stream_chat_close_closes_upstream_within_a_second(
    client: AsyncOpenAI,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    source = stream_chat(ask("[tokens=1000] [delay=20]"), client=client, model="fake")
    for _ in range(3):
        assert isinstance(await anext(source), Token)
    call = fake_openai.last_call()
    left = time.monotonic()
    await source.aclose()  # type: ignore[attr-defined]
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, 3.0)
    assert call.disconnected
    assert closed is not None
    assert closed - left < 1.0
    assert call.chunks < 100


async def test_adapt_stream_turns_an_sdk_stream_into_the_same_events(client: AsyncOpenAI) -> None:
    fast = await collect(stream_chat(ask("[tools]"), client=client, model="fake"))
    sdk_stream = await client.chat.completions.create(
        model="fake", messages=ask("[tools]"), stream=True, stream_options={"include_usage": True}
    )
    adapted = await collect(adapt_stream(sdk_stream))
    assert [e for e in adapted if not isinstance(e, Done)] == [
        e for e in fast if not isinstance(e, Done)
    ]
    done = adapted[-1]
    assert isinstance(done, Done)
    assert done.finish_reason == "tool_calls"


async def test_adapt_stream_maps_a_mid_stream_error(client: AsyncOpenAI) -> None:
    sdk_stream = await client.chat.completions.create(
        model="fake", messages=ask("[error_mid=1]"), stream=True
    )
    events = await collect(adapt_stream(sdk_stream, raw=True))
    assert [type(e) for e in events] == [RawChunk, RawChunk, Token, Error]
    error = events[-1]
    assert isinstance(error, Error)
    assert error.code == "upstream_error"


async def test_stream_chat_raw_chunks_are_the_upstream_json_text(client: AsyncOpenAI) -> None:
    events = await collect(stream_chat(ask("hi"), client=client, model="fake", raw=True))
    raw = next(e for e in events if isinstance(e, RawChunk) and '"Hello"' in e.json)
    assert raw.json.startswith('{"id":"chatcmpl-fake","object":"chat.completion.chunk"')
