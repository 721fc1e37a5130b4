"""Token coalescing, driven by real async generators with real timing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

from stream_app.llm.coalesce import coalesce
from stream_app.llm.events import Done, LLMEvent, Token, Usage


class Source:
    """An async generator of events with a delay before each; records that it was closed."""

    def __init__(self, items: list[tuple[float, LLMEvent]]) -> None:
        self.items = items
        self.closed = False

    async def run(self) -> AsyncIterator[LLMEvent]:
        try:
            for delay, event in self.items:
                if delay:
                    await asyncio.sleep(delay)
                yield event
        finally:
            self.closed = True


async def timed(source: AsyncIterator[object]) -> list[tuple[float, object]]:
    start = time.perf_counter()
    return [(time.perf_counter() - start, event) async for event in source]


def texts(events: list[tuple[float, object]]) -> list[str]:
    return [e.text for _, e in events if isinstance(e, Token)]


async def test_coalesce_off_passes_every_event_through() -> None:
    source = Source([(0, Token("a")), (0, Token("b")), (0, Done("stop"))])
    events = await timed(coalesce(source.run()))
    assert [e for _, e in events] == [Token("a"), Token("b"), Done("stop")]
    assert source.closed


async def test_coalesce_by_chars_merges_until_the_limit() -> None:
    items: list[tuple[float, LLMEvent]] = [(0, Token("ab")) for _ in range(10)]
    source = Source([*items, (0, Done("stop"))])
    events = await timed(coalesce(source.run(), max_chars=6))
    assert texts(events) == ["ababab", "ababab", "ababab", "ab"]


async def test_coalesce_first_token_is_not_delayed() -> None:
    source = Source([(0.05, Token("first")), (0.01, Token("x")), (0.01, Token("y"))])
    events = await timed(coalesce(source.run(), interval_ms=200))
    first_at, first = events[0]
    assert first == Token("first")
    assert first_at < 0.15
    assert texts(events) == ["first", "xy"]


async def test_coalesce_by_interval_sends_at_most_one_event_per_interval() -> None:
    source = Source([(0.005, Token(str(i % 10))) for i in range(60)])
    events = await timed(coalesce(source.run(), interval_ms=50))
    assert "".join(texts(events)) == "".join(str(i % 10) for i in range(60))
    # About 0.3 s of tokens at 50 ms per event: far fewer events than tokens.
    assert 3 <= len(events) <= 12
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(events)]
    assert all(gap >= 0.03 for gap in gaps[:-1]), gaps


async def test_coalesce_stalled_upstream_flushes_within_the_interval() -> None:
    source = Source([(0, Token("a")), (0.001, Token("b")), (1.0, Token("c"))])
    events = await timed(coalesce(source.run(), interval_ms=100))
    assert texts(events) == ["a", "b", "c"]
    # "b" waited for the interval, not for "c" a second later.
    assert events[1][0] < 0.4


async def test_coalesce_other_events_flush_text_first_and_keep_order() -> None:
    usage = Usage(1, 2, 3)
    source = Source(
        [(0, Token("a")), (0, Token("b")), (0, usage), (0, Token("c")), (0, Done(None))]
    )
    events = await timed(coalesce(source.run(), interval_ms=1000, max_chars=100))
    # Arriving together, "a" and "b" merge; the usage event sends them first, then itself.
    assert [e for _, e in events] == [Token("ab"), usage, Token("c"), Done(None)]


async def test_coalesce_close_with_a_read_in_flight_closes_the_source() -> None:
    source = Source([(0, Token("a")), (0.001, Token("b")), (5.0, Token("never"))])
    stream = coalesce(source.run(), interval_ms=50)
    assert await anext(stream) == Token("a")
    # "b" goes out after the interval while the read of the next token is still in flight.
    assert await asyncio.wait_for(anext(stream), 1.0) == Token("b")
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    assert source.closed
    assert time.perf_counter() - started < 0.5
