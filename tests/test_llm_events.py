"""Pure parts of stream_app.llm: tool-call merging, stats, error codes, the formatters."""

from __future__ import annotations

import time

import pytest

from stream_app.llm.errors import CODES, error_event, parse_retry_after, status_error
from stream_app.llm.events import (
    Done,
    Error,
    RawChunk,
    StreamStats,
    Token,
    ToolCallAccumulator,
    Usage,
)
from stream_app.llm.events import ToolCall as Call
from stream_app.llm.formats import FORMATS, get_formatter


def test_tool_call_accumulator_merges_deltas_per_index() -> None:
    tools = ToolCallAccumulator()
    assert tools.feed(1, "b", "second", None) == Call(1, "b", "second", "", "")
    assert tools.feed(0, "a", "first", '{"x"') == Call(0, "a", "first", '{"x"', '{"x"')
    assert tools.feed(0, None, None, ": 1}") == Call(0, "a", "first", '{"x": 1}', ": 1}")
    assert tools.complete(0) == [Call(0, "a", "first", '{"x": 1}', "", True)]
    assert tools.complete() == [Call(1, "b", "second", "", "", True)]
    assert tools.complete() == []


def test_stream_stats_measure_ttft_and_rate() -> None:
    stats = StreamStats()
    stats.started_at -= 0.2
    stats.token()
    stats.first_token_at = time.perf_counter() - 0.1
    for _ in range(10):
        stats.token()
    done = stats.done("stop", None)
    assert done.tokens == 11
    assert done.ttft_ms is not None
    assert 50 <= done.ttft_ms <= 200
    assert done.tokens_per_second is not None
    assert 30 <= done.tokens_per_second <= 110


def test_stream_stats_prefer_provider_token_counts() -> None:
    stats = StreamStats()
    stats.token()
    done = stats.done("length", Usage(5, 40, 45))
    assert done.tokens == 40
    assert done.payload()["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 40,
        "total_tokens": 45,
    }


def test_stream_stats_without_tokens_have_no_rate() -> None:
    done = StreamStats().done("stop", None)
    assert (done.ttft_ms, done.tokens_per_second, done.tokens) == (None, None, 0)


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        (429, "rate_limited", 429),
        (401, "upstream_auth", 502),
        (403, "upstream_auth", 502),
        (400, "bad_request", 400),
        (422, "bad_request", 400),
        (408, "timeout", 504),
        (500, "upstream_error", 502),
        (503, "upstream_error", 502),
    ],
)
def test_status_error_maps_upstream_statuses(status: int, code: str, http: int) -> None:
    error = status_error(status, "detail")
    assert (error.code, error.status, error.upstream_status) == (code, http, status)


def test_error_messages_hide_upstream_detail_unless_debug() -> None:
    assert "secret" not in error_event("upstream_error", "secret").message
    assert "too long" in error_event("bad_request", "context too long").message
    assert set(CODES) >= {"rate_limited", "timeout", "upstream_unavailable", "internal_error"}


@pytest.mark.parametrize(
    ("value", "seconds"), [("7", 7.0), ("0.5", 0.5), ("soon", None), ("-1", None), (None, None)]
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_events_formatter_names_each_event() -> None:
    formatter = get_formatter("events")
    assert formatter.encode(Token("hi")) == [({"text": "hi"}, "token")]
    assert formatter.encode(RawChunk("{}")) == []
    assert formatter.encode(Error("timeout", "slow", 504))[0][1] == "error"


def test_openai_formatter_passes_chunks_through() -> None:
    formatter = get_formatter("openai", include_usage=False)
    assert formatter.encode(RawChunk('{"a":1}')) == [('{"a":1}', None)]
    assert formatter.encode(RawChunk('{"usage":1}', usage_only=True)) == []
    assert formatter.encode(Token("x")) == []
    assert formatter.encode(Done("stop")) == [("[DONE]", None)]
    assert formatter.encode(Error("timeout", "slow", 504)) == [
        ({"error": {"message": "slow", "type": "timeout", "code": "timeout"}}, None)
    ]
    assert formatter.reconnects is False


def test_vercel_formatter_reports_invalid_tool_arguments() -> None:
    formatter = get_formatter("vercel", message_id="m1")
    assert formatter.start()[0] == ({"type": "start", "messageId": "m1"}, None)
    frames = formatter.encode(Call(0, "c1", "f", "{bad", "", True))
    kinds = [data["type"] for data, _ in frames]
    assert kinds == ["tool-input-start", "tool-input-error"]
    assert frames[1][0]["input"] == "{bad"


def test_vercel_formatter_numbers_text_parts_around_tool_calls() -> None:
    formatter = get_formatter("vercel")
    frames = [
        *formatter.encode(Token("a")),
        *formatter.encode(Call(0, "c1", "f", "{}", "{}", False)),
        *formatter.encode(Token("b")),
        *formatter.encode(Done("stop")),
    ]
    parts = [
        data if isinstance(data, str) else (data["type"], data.get("id")) for data, _ in frames
    ]
    assert parts == [
        ("text-start", "text-1"),
        ("text-delta", "text-1"),
        ("text-end", "text-1"),
        ("tool-input-start", None),
        ("tool-input-delta", None),
        ("text-start", "text-2"),
        ("text-delta", "text-2"),
        ("text-end", "text-2"),
        ("finish-step", None),
        ("finish", None),
        "[DONE]",
    ]


def test_get_formatter_refuses_unknown_formats() -> None:
    assert FORMATS == ("events", "openai", "vercel")
    with pytest.raises(ValueError, match="unknown LLM stream format"):
        get_formatter("xml")  # type: ignore[arg-type]
