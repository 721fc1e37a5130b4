"""``stream_app.llm.responses.llm_response`` at its edges, read in process: an upstream that
fails before its first event, one that ends at once, a HEAD request, and what the upstream
learns in each case (its iterator is closed: the upstream request ends)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.test import AsyncClient, override_settings
from django.urls import path

from stream_app.llm.events import Done, Error, LLMEvent, Token
from stream_app.llm.responses import llm_response
from stream_app.testing import read_stream

closed: list[str] = []


def upstream(name: str, *events: LLMEvent) -> AsyncIterator[LLMEvent]:
    async def run() -> AsyncIterator[LLMEvent]:
        try:
            for event in events:
                yield event
        finally:
            closed.append(name)

    return run()


async def _view(request: HttpRequest, kind: str) -> HttpResponseBase:
    sources: dict[str, Any] = {
        "tokens": upstream("tokens", Token("a"), Token("b"), Done("stop")),
        "empty": upstream("empty"),
        "refused": upstream("refused", Error("rate_limited", "slow down", status=429)),
    }
    return await llm_response(request, sources[kind])


urlpatterns = [path("llm/<str:kind>/", _view)]


@override_settings(ROOT_URLCONF=__name__)
async def test_an_upstream_that_fails_first_is_a_json_error_with_its_status() -> None:
    closed.clear()
    async with read_stream(AsyncClient(), "/llm/refused/") as answer:
        assert answer.status_code == 429
        assert answer.json() == {
            "error": "rate_limited",
            "code": "rate_limited",
            "message": "slow down",
        }
    assert closed == ["refused"]


@override_settings(ROOT_URLCONF=__name__)
async def test_tokens_then_done_and_an_empty_upstream_ends_the_stream() -> None:
    closed.clear()
    async with read_stream(AsyncClient(), "/llm/tokens/") as events:
        got = await events.until("done")
    assert [(e.event, json.loads(e.data)) for e in got[:2]] == [
        ("token", {"text": "a"}),
        ("token", {"text": "b"}),
    ]
    async with read_stream(AsyncClient(), "/llm/empty/") as events:
        assert events.status_code == 200
        assert await events.read_all() == []
    assert sorted(closed) == ["empty", "tokens"]


@override_settings(ROOT_URLCONF=__name__)
async def test_head_closes_the_upstream_and_sends_no_body() -> None:
    closed.clear()
    async with read_stream(AsyncClient(), "/llm/tokens/", method="HEAD") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
    assert closed == ["tokens"]
