"""The three output formats of direct streams, over real servers, against the fake upstream.

- our named events (``POST /api/stream``), read with our decoder;
- the OpenAI wire format (``POST /v1/chat/completions``), consumed by the ``openai`` SDK itself;
- the Vercel AI SDK UI message stream (``POST /api/chat``), each part checked against the
  AI SDK's strict part schema.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from stream_app.protocol import Decoder, Event
from tests.conftest import Server, start_server
from tests.fake_openai import DEFAULT_TEXT, FakeOpenAI
from tests.llm_support import API_TOKEN, fake_openai, llm_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def llm_server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> Iterator[Server]:
    """A server of each kind whose model is the fake upstream."""
    server = start_server(request.param, llm_env(fake_openai))
    yield server
    server.stop()


@pytest.fixture
async def sdk(llm_server: Server) -> AsyncIterator[AsyncOpenAI]:
    """The openai SDK pointed at OUR server."""
    client = AsyncOpenAI(base_url=f"{llm_server.url}/v1", api_key=API_TOKEN, max_retries=0)
    yield client
    await client.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def post_events(url: str, body: Any) -> tuple[httpx.Response, list[Event]]:
    """POST ``body`` and read the whole SSE answer with our decoder."""
    decoder = Decoder()
    events: list[Event] = []
    async with (
        httpx.AsyncClient(timeout=15) as client,
        client.stream("POST", url, json=body, headers=AUTH) as response,
    ):
        async for chunk in response.aiter_raw():
            events.extend(decoder.feed(chunk))
    return response, events


# -- our named events -------------------------------------------------------------------------


async def test_events_format_streams_tokens_usage_and_done(llm_server: Server) -> None:
    response, events = await post_events(f"{llm_server.url}/api/stream", {"messages": ask("hi")})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [e.event for e in events]
    assert names[-2:] == ["usage", "done"]
    assert set(names) == {"token", "usage", "done"}
    text = "".join(json.loads(e.data or "")["text"] for e in events if e.event == "token")
    assert text == DEFAULT_TEXT
    done = json.loads(events[-1].data or "")
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(DEFAULT_TEXT.split())
    assert done["ttft_ms"] is not None
    assert done["tokens_per_second"] is not None


async def test_events_format_streams_tool_calls(llm_server: Server) -> None:
    _, events = await post_events(f"{llm_server.url}/api/stream", {"messages": ask("[tools]")})
    calls = [json.loads(e.data or "") for e in events if e.event == "tool_call"]
    complete = [c for c in calls if c["complete"]]
    assert [(c["name"], json.loads(c["arguments"])) for c in complete] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "UTC"}),
    ]
    assert any(not c["complete"] and c["delta"] for c in calls)
    assert json.loads(events[-1].data or "")["finish_reason"] == "tool_calls"


async def test_events_format_error_mid_stream_is_an_error_event(llm_server: Server) -> None:
    response, events = await post_events(
        f"{llm_server.url}/api/stream", {"messages": ask("[error_mid=2]")}
    )
    assert response.status_code == 200
    assert [e.event for e in events] == ["token", "token", "error"]
    assert json.loads(events[-1].data or "")["code"] == "upstream_error"


@pytest.mark.parametrize(
    ("status", "code", "answer"), [(429, "rate_limited", 429), (500, "upstream_error", 502)]
)
async def test_events_format_error_before_first_byte_is_an_http_status(
    llm_server: Server, status: int, code: str, answer: int
) -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.post(
            f"{llm_server.url}/api/stream",
            json={"messages": ask(f"[status={status}]")},
            headers=AUTH,
        )
    assert response.status_code == answer
    body = response.json()
    assert body["error"] == code
    assert body["code"] == code
    if status == 429:
        assert body["retry_after"] == 7.0


# -- the OpenAI wire format, read by the openai SDK -------------------------------------------


async def test_openai_format_is_consumed_by_the_openai_sdk(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="fake-model", messages=ask("hi"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(DEFAULT_TEXT.split())
    assert {c.id for c in chunks} == {"chatcmpl-fake"}


async def test_openai_format_sends_usage_only_when_asked(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(model="fake-model", messages=ask("hi"), stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_openai_format_tool_call_deltas_reach_the_sdk(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(model="m", messages=ask("[tools]"), stream=True)
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    async for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function and call.function.name:
                names[call.index] = call.function.name
            if call.function and call.function.arguments:
                arguments[call.index] = arguments.get(call.index, "") + call.function.arguments
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads(arguments[0]) == {"city": "Paris"}
    assert json.loads(arguments[1]) == {"tz": "UTC"}


async def test_openai_format_rate_limit_is_a_rate_limit_error_in_the_sdk(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        await sdk.chat.completions.create(model="m", messages=ask("[status=429]"), stream=True)
    assert raised.value.status_code == 429


async def test_openai_format_error_mid_stream_raises_in_the_sdk(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="m", messages=ask("[error_mid=3]"), stream=True
    )
    received: list[Any] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as raised:
        await read_all()
    assert "failed while answering" in raised.value.message
    assert sum(1 for c in received if c.choices and c.choices[0].delta.content) == 3


async def test_openai_format_requires_the_token(llm_server: Server) -> None:
    client = AsyncOpenAI(base_url=f"{llm_server.url}/v1", api_key="wrong", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="m", messages=ask("hi"), stream=True)
    finally:
        await client.close()


# -- the Vercel AI SDK UI message stream ------------------------------------------------------

# Required and optional keys of each part type, from the AI SDK's strict zod schema
# (packages/ai/src/ui-message-stream/ui-message-chunks.ts): an extra key fails validation.
UI_PARTS: dict[str, tuple[set[str], set[str]]] = {
    "start": ({"type"}, {"messageId", "messageMetadata"}),
    "start-step": ({"type"}, set()),
    "text-start": ({"type", "id"}, {"providerMetadata"}),
    "text-delta": ({"type", "id", "delta"}, {"providerMetadata"}),
    "text-end": ({"type", "id"}, {"providerMetadata"}),
    "tool-input-start": ({"type", "toolCallId", "toolName"}, {"providerExecuted", "dynamic"}),
    "tool-input-delta": ({"type", "toolCallId", "inputTextDelta"}, set()),
    "tool-input-available": ({"type", "toolCallId", "toolName", "input"}, {"providerExecuted"}),
    "error": ({"type", "errorText"}, set()),
    "finish-step": ({"type"}, set()),
    "finish": ({"type"}, {"finishReason", "messageMetadata"}),
}


async def vercel_parts(server: Server, text: str) -> tuple[httpx.Response, list[Any]]:
    body = {
        "id": "chat-1",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
    }
    response, events = await post_events(f"{server.url}/api/chat", body)
    assert all(e.event is None for e in events)
    assert events[-1].data == "[DONE]"
    parts = [json.loads(e.data or "") for e in events[:-1]]
    for part in parts:
        required, optional = UI_PARTS[part["type"]]
        assert required <= set(part) <= required | optional, part
    return response, parts


async def test_vercel_format_streams_a_ui_message(llm_server: Server) -> None:
    response, parts = await vercel_parts(llm_server, "hi")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    types = [p["type"] for p in parts]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"]
    assert set(types[3:-3]) == {"text-delta"}
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == DEFAULT_TEXT
    assert parts[-1]["messageMetadata"]["finishReason"] == "stop"
    assert parts[-1]["messageMetadata"]["usage"]["prompt_tokens"] == 11


async def test_vercel_format_streams_tool_inputs(llm_server: Server) -> None:
    _, parts = await vercel_parts(llm_server, "[tools]")
    available = [p for p in parts if p["type"] == "tool-input-available"]
    assert [(p["toolCallId"], p["toolName"], p["input"]) for p in available] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "UTC"}),
    ]
    deltas = "".join(
        p["inputTextDelta"]
        for p in parts
        if p["type"] == "tool-input-delta" and p["toolCallId"] == "call_a"
    )
    assert json.loads(deltas) == {"city": "Paris"}
    starts = [p["type"] for p in parts].index("tool-input-start")
    assert parts[starts]["toolName"] == "get_weather"
    assert parts[-1]["messageMetadata"]["finishReason"] == "tool-calls"


async def test_vercel_format_error_mid_stream_is_an_error_part(llm_server: Server) -> None:
    _, parts = await vercel_parts(llm_server, "[error_mid=2]")
    types = [p["type"] for p in parts]
    assert "error" in types
    assert types.index("error") > types.index("text-end")
    assert parts[-1]["messageMetadata"]["finishReason"] == "error"


async def test_vercel_format_refuses_a_request_without_csrf_or_token(llm_server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{llm_server.url}/api/chat", json={"messages": []})
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"


# -- a client that leaves ---------------------------------------------------------------------


async def test_direct_stream_client_disconnect_closes_upstream_within_a_second(
    llm_server: Server,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    body = {"model": "m", "stream": True, "messages": ask("[tokens=3000] [delay=20]")}
    async with (
        httpx.AsyncClient(timeout=15) as client,
        client.stream(
            "POST", f"{llm_server.url}/v1/chat/completions", json=body, headers=AUTH
        ) as response,
    ):
        assert response.status_code == 200
        received = b""
        async for chunk in response.aiter_raw():
            received += chunk
            if received.count(b"data: ") >= 5:
                break
        call = fake_openai.last_call()
        assert call.closed_at is None
        left = time.monotonic()
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, 5.0)
    assert call.disconnected
    assert closed is not None
    assert closed - left < 1.0
