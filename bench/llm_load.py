"""The LLM benchmark's load: answers read over raw sockets, timed, and metered from /proc.

A target is where the load generator sends a request for an answer of ``n`` tokens: the fake
upstream itself (``direct``: ``POST /v1/chat/completions``, the OpenAI wire format), or our
server (``chat``: ``llm_response``; ``generation``: ``stream_generation``), which asks that same
upstream. Every answer is read by an ``AnswerConn`` (``bench.loadgen``'s ``CountConn``: no SSE
decoding, only byte scans), which notes the first token and whether the last one and the
terminal event arrived. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.loadgen import HOST, CountConn, get_request
from bench.procs import busy_seconds, cpu_seconds

__all__ = ["Meter", "Streams", "Target", "Ttft", "measure_streams", "measure_ttft", "warm_up"]

# The fake upstream's tokens are "t0 ", "t1 "...: the first token's text opens with this in
# every format measured ('"content":"t0 "', '{"text":"t0 "}', or coalesced '{"text":"t0 t1 ').
_FIRST_TOKEN = b'"t0 '
# The terminal event: ours ("event: done") and the OpenAI wire format's "data: [DONE]".
_TERMINAL = (b"event: done\n", b"data: [DONE]")
_CARRY = 16  # bytes kept across reads so that a marker split between two reads is found
# Upper bound on a stream's frames (it ends at the body's end long before this).
_UNBOUNDED = 10**12


@dataclass(frozen=True)
class Target:
    """Where answers are requested: the fake upstream itself, or a view of our server."""

    name: str
    port: int
    path: str  # our view, or "" for the upstream's chat-completions endpoint

    def request(self, tokens: int) -> bytes:
        """The HTTP request for an answer of ``tokens`` tokens."""
        if self.path:
            return get_request(f"{self.path}?n={tokens}", self.port)
        # What ``stream_chat`` sends, so direct and proxied answers are the same bytes upstream.
        body = json.dumps(
            {
                "model": "fake",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"[tokens={tokens}]"}],
            }
        ).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer bench\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


class AnswerConn(CountConn):
    """One answer: ``data:`` frames counted, first token timed, completeness checked.

    Complete means the last token ("t<n-1> ", coalesced or not) and the terminal event were
    read and the body ended; the ``CountConn`` machinery counts frames and notes the end.
    """

    def __init__(self, request: bytes, tokens: int) -> None:
        super().__init__(request, _UNBOUNDED)
        self.t_first_token: float | None = None
        self.saw_last = self.saw_terminal = False
        self._last = b"t%d " % (tokens - 1)
        self._carry = b""
        self.bytes = 0

    def body(self, data: bytes, now: float) -> None:
        self.bytes += len(data)
        window = self._carry + data
        if self.t_first_token is None and _FIRST_TOKEN in window:
            self.t_first_token = now
        if not self.saw_last and self._last in window:
            self.saw_last = True
        if not self.saw_terminal and any(marker in window for marker in _TERMINAL):
            self.saw_terminal = True
        self._carry = window[-_CARRY:]
        super().body(data, now)

    @property
    def complete(self) -> bool:
        """A 200 answer that held its last token and terminal event and then ended."""
        return self.status == 200 and self.saw_last and self.saw_terminal and self.done.done()


async def _answer(target: Target, tokens: int, timeout: float) -> AnswerConn:
    """Request one answer and read it to its end (closed afterwards, or at the timeout)."""
    loop = asyncio.get_running_loop()
    factory = partial(AnswerConn, target.request(tokens), tokens)
    _, conn = await loop.create_connection(factory, HOST, target.port)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await conn.done
    finally:
        conn.close()
    return conn


class Meter:
    """CPU of the server and the upstream over one or more windows, and others' on our cores."""

    def __init__(self, server: list[int], upstream: list[int]) -> None:
        self.server, self.upstream = server, upstream
        self.own = [*server, *upstream, os.getpid()]
        self.server_s = self.upstream_s = self.others_s = self.wall_s = 0.0

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Add the CPU spent during the block."""
        server, upstream, own = (cpu_seconds(p) for p in (self.server, self.upstream, self.own))
        busy, start = busy_seconds(), time.perf_counter()
        try:
            yield
        finally:
            self.server_s += cpu_seconds(self.server) - server
            self.upstream_s += cpu_seconds(self.upstream) - upstream
            self.others_s += busy_seconds() - busy - (cpu_seconds(self.own) - own)
            self.wall_s += time.perf_counter() - start

    @property
    def others_pct(self) -> float:
        """Other processes' CPU on our two cores, in % of one core."""
        return 100 * max(0.0, self.others_s) / self.wall_s if self.wall_s else 0.0


@dataclass(frozen=True)
class Ttft:
    """``requests`` short answers one after another (``warm`` more first, not counted)."""

    requests: int
    tokens: int = 5
    warm: int = 5


@dataclass(frozen=True)
class Streams:
    """``streams`` concurrent answers of ``tokens`` tokens, ``rounds`` times."""

    streams: int
    tokens: int
    rounds: int = 3


def _ms(seconds: float) -> float:
    return seconds * 1000.0


async def warm_up(target: Target, phase: Ttft) -> None:
    """``phase.warm`` answers first, not measured: lazy imports, the SDK client and its pool."""
    for _ in range(phase.warm):
        await _answer(target, phase.tokens, timeout=10)


async def measure_ttft(target: Target, phase: Ttft, meter: Meter) -> dict[str, Any]:
    """Time to the first token of short answers, one request at a time, each on a new
    connection (as a browser's ``fetch`` or ``EventSource`` would open it)."""
    firsts: list[float] = []
    heads: list[float] = []
    complete = 0
    with meter.window():
        for _ in range(phase.requests):
            conn = await _answer(target, phase.tokens, timeout=10)
            complete += conn.complete
            if conn.t_first_token is not None:
                firsts.append(conn.t_first_token - conn.t_sent)
            if conn.t_first_byte is not None:
                heads.append(conn.t_first_byte - conn.t_sent)
    firsts.sort()
    return {
        "requests": phase.requests,
        "complete": complete,
        "ttft_ms": _ms(statistics.median(firsts)) if firsts else None,
        "ttft_p90_ms": _ms(firsts[int(0.9 * (len(firsts) - 1))]) if firsts else None,
        "ttft_min_ms": _ms(firsts[0]) if firsts else None,
        "first_byte_ms": _ms(statistics.median(heads)) if heads else None,
        # Per request: a TTFT request is short, so this is mostly per-request cost.
        "server_cpu_ms_per_request": _ms(meter.server_s) / phase.requests,
        "upstream_cpu_ms_per_request": _ms(meter.upstream_s) / phase.requests,
        "others_cpu_pct": meter.others_pct,
    }


async def measure_streams(target: Target, phase: Streams, meter: Meter) -> dict[str, Any]:
    """Tokens per second (the best round) and CPU per 100,000 tokens (all rounds)."""
    rates: list[float] = []
    tokens = frames = complete = 0
    firsts: list[float] = []
    # Bounded: at 1,000 tokens/s at least, plus slack.
    timeout = 30 + phase.streams * phase.tokens / 1000
    for _ in range(phase.rounds):
        with meter.window():
            conns = await asyncio.gather(
                *(_answer(target, phase.tokens, timeout) for _ in range(phase.streams))
            )
        ended = [c.t_done for c in conns if c.t_done is not None]
        done = [c for c in conns if c.complete]
        complete += len(done)
        tokens += len(done) * phase.tokens
        # Over every stream, complete or not: how far cut-off streams got.
        frames += sum(c.count for c in conns)
        firsts += [c.t_first_token - c.t_sent for c in conns if c.t_first_token is not None]
        if ended and done:
            span = max(ended) - min(c.t_sent for c in conns)
            rates.append(len(done) * phase.tokens / span)
    # A stream cut off before its end (the server closed a slow consumer) makes both figures
    # meaningless: the rounds' work was not done. The counts stay in the record.
    all_done = complete == phase.streams * phase.rounds
    per_100k = 100_000 / tokens if tokens and all_done else None
    return {
        "complete": complete,
        "expected": phase.streams * phase.rounds,
        "tokens_total": tokens,
        # The best round: the one least disturbed by anything else on the machine.
        "tokens_per_s": max(rates) if rates and all_done else None,
        "tokens_per_s_rounds": rates,
        "frames_per_stream": frames / (phase.streams * phase.rounds),
        "ttft_ms": _ms(statistics.median(firsts)) if firsts else None,
        "server_cpu_s": meter.server_s,
        "server_cpu_ms_per_100k": _ms(meter.server_s) * per_100k if per_100k else None,
        "upstream_cpu_ms_per_100k": _ms(meter.upstream_s) * per_100k if per_100k else None,
        "others_cpu_pct": meter.others_pct,
    }
