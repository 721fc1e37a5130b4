"""A local OpenAI-compatible (and Anthropic-compatible) server for the tests.

It runs uvicorn in a thread of the test process, on a loopback port, and speaks the real wire
formats: ``POST /v1/chat/completions`` streams ``data: {chat.completion.chunk}`` frames (role
chunk, content deltas, tool-call deltas split per ``index``, a finish chunk, the usage chunk
when asked) and ``data: [DONE]``; ``POST /v1/messages`` streams Anthropic's named events. The
test servers (daphne, uvicorn subprocesses) reach it through ``OPENAI_BASE_URL``.

What it does is chosen by tags in the last user message (so a browser test can type them):

==================  ==========================================================================
``[tokens=N]``      answer with N tokens ``"t0 "``, ``"t1 "``... (default: a short sentence)
``[delay=MS]``      wait MS milliseconds before each content chunk
``[first=MS]``      wait MS milliseconds before the first chunk
``[last=MS]``       wait MS milliseconds before the finish chunk (after the last token)
``[tools]``         two tool calls, arguments split over several deltas
``[error_mid=K]``   K tokens, then an error object mid-stream (``data: {"error": ...}``)
``[status=S]``      answer HTTP S with an OpenAI error body (429 with ``retry-after: 7``)
``[drop=K]``        K tokens, then the connection is cut without the end of the body
``[xss]``           an answer holding HTML and script payloads
``[text=...]``      answer with this text (one token per word)
==================  ==========================================================================

Continuation: when the last message is an ``assistant`` message holding the start of the
answer (what a generation taken over by another worker sends), only the rest is streamed.

Every request is recorded (``calls``) with its body and the monotonic time its connection
closed, so a test can check that a client that left made us close the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

__all__ = ["XSS_TEXT", "Call", "FakeOpenAI", "tags_of"]

DEFAULT_TEXT = "Hello from the fake model. It streams one word at a time."
XSS_TEXT = (
    'Payload: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script> '
    "and [a link](javascript:window.__xss=3) and **bold** text."
)
_TAG = re.compile(r"\[(\w+)(?:=([^\]]*))?\]")


def tags_of(body: dict[str, Any]) -> dict[str, str]:
    """The ``[key=value]`` tags of the last user message of a request body."""
    messages = body.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return {key: value for key, value in _TAG.findall(str(content or ""))}
    return {}


@dataclass
class Call:
    """One request the fake server answered."""

    path: str
    body: dict[str, Any]
    tags: dict[str, str]
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    disconnected: bool = False
    chunks: int = 0


class FakeOpenAI:
    """The server; ``start()`` it, point ``base_url`` at ``url``, ``stop()`` it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        """The server root (Anthropic's base URL)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Run uvicorn in a thread; return once it listens."""
        from tests.conftest import free_port

        self.port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def last_call(self, path: str = "/v1/chat/completions") -> Call:
        """The most recent request on ``path``."""
        return next(c for c in reversed(self.calls) if c.path == path)

    def wait_closed(self, call: Call, timeout: float = 5.0) -> float | None:
        """Wait until ``call``'s connection has closed; returns when it did (or None)."""
        deadline = time.monotonic() + timeout
        while call.closed_at is None and time.monotonic() < deadline:
            time.sleep(0.005)
        return call.closed_at

    # -- the ASGI app ---------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Route ``/v1/chat/completions`` and ``/v1/messages``."""
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        call = Call(scope["path"], payload, tags_of(payload))
        self.calls.append(call)
        try:
            if scope["path"] == "/v1/chat/completions":
                await self._chat(call, receive, send)
            elif scope["path"] == "/v1/messages":
                await self._anthropic(call, receive, send)
            else:
                await _json(send, 404, {"error": {"message": "not found", "type": "not_found"}})
        finally:
            if call.closed_at is None:
                call.closed_at = time.monotonic()

    async def _stream(
        self, call: Call, receive: Any, send: Any, frames: list[tuple[float, bytes | None]]
    ) -> None:
        """Send ``(delay, frame)`` pairs; ``None`` cuts the connection. Stops on disconnect."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    call.disconnected = True
                    call.closed_at = time.monotonic()
                    gone.set()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            for delay, frame in frames:
                if delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), delay)
                if gone.is_set():
                    return
                if frame is None:
                    raise ConnectionAbortedError("fake upstream cut the connection")
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                call.chunks += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    async def _chat(self, call: Call, receive: Any, send: Any) -> None:
        tags = call.tags
        if "status" in tags:
            status = int(tags["status"])
            error = {"message": f"fake error {status}", "type": "fake_error", "code": None}
            headers = [(b"retry-after", b"7")] if status == 429 else []
            await _json(send, status, {"error": error}, headers)
            return
        body = call.body
        if not body.get("stream"):
            text = _answer_text(tags)
            completion = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
            await _json(send, 200, completion)
            return
        await self._stream(call, receive, send, _chat_frames(body, tags))

    async def _anthropic(self, call: Call, receive: Any, send: Any) -> None:
        tags = call.tags
        if "status" in tags:
            status = int(tags["status"])
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
            await _json(send, status, error, [(b"retry-after", b"3")])
            return
        await self._stream(call, receive, send, _anthropic_frames(call.body, tags))


async def _json(
    send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _answer_tokens(tags: dict[str, str]) -> list[str]:
    if "tokens" in tags:
        return [f"t{i} " for i in range(int(tags["tokens"]))]
    text = XSS_TEXT if "xss" in tags else tags.get("text") or DEFAULT_TEXT
    return re.findall(r"\s*\S+", text)


def _continued_at(body: dict[str, Any], tokens: list[str]) -> int:
    """How many of ``tokens`` a trailing assistant message already holds (0: none)."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        return 0
    prefix = str(messages[-1].get("content") or "")
    done = ""
    for index, token in enumerate(tokens):
        if done == prefix:
            return index
        done += token
    return len(tokens) if done == prefix else 0


def _answer_text(tags: dict[str, str]) -> str:
    return "".join(_answer_tokens(tags))


def _frame(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _chat_frames(body: dict[str, Any], tags: dict[str, str]) -> list[tuple[float, bytes | None]]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _frame({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    delay = float(tags.get("delay", "0")) / 1000
    frames: list[tuple[float, bytes | None]] = [
        (float(tags.get("first", "0")) / 1000, chunk({"role": "assistant", "content": ""}))
    ]
    finish = "stop"
    if "tools" in tags:
        finish = "tool_calls"
        calls = [
            ("call_a", "get_weather", ['{"city"', ': "Par', 'is"}']),
            ("call_b", "get_time", ["{", '"tz": "UTC"', "}"]),
        ]
        for index, (call_id, name, pieces) in enumerate(calls):
            head = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            frames.append((delay, chunk({"tool_calls": [head]})))
            for piece in pieces:
                delta = {"index": index, "function": {"arguments": piece}}
                frames.append((delay, chunk({"tool_calls": [delta]})))
        completion_tokens = 9
    else:
        tokens = _answer_tokens(tags)
        tokens = tokens[_continued_at(body, tokens) :]
        limit = None
        for key in ("error_mid", "drop"):
            if key in tags:
                limit = int(tags[key])
        for token in tokens[:limit]:
            frames.append((delay, chunk({"content": token})))
        if "error_mid" in tags:
            error = {"message": "fake failure mid-stream", "type": "server_error", "code": None}
            frames.append((0, _frame({"error": error})))
            return frames
        if "drop" in tags:
            frames.append((0, None))
            return frames
        completion_tokens = len(tokens)
    frames.append((float(tags.get("last", "0")) / 1000, chunk({}, finish)))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": completion_tokens,
            "total_tokens": 11 + completion_tokens,
        }
        frames.append((0, _frame({**base, "choices": [], "usage": usage})))
    frames.append((0, b"data: [DONE]\n\n"))
    return frames


def _named(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\n".encode() + _frame({"type": event, **data})


def _anthropic_frames(
    body: dict[str, Any], tags: dict[str, str]
) -> list[tuple[float, bytes | None]]:
    delay = float(tags.get("delay", "0")) / 1000
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    frames: list[tuple[float, bytes | None]] = [(0, _named("message_start", {"message": message}))]
    text = {"index": 0, "content_block": {"type": "text", "text": ""}}
    frames.append((0, _named("content_block_start", text)))
    tokens = _answer_tokens(tags)
    limit = int(tags["error_mid"]) if "error_mid" in tags else None
    for token in tokens[:limit]:
        delta = {"index": 0, "delta": {"type": "text_delta", "text": token}}
        frames.append((delay, _named("content_block_delta", delta)))
    if "error_mid" in tags:
        error = {"error": {"type": "overloaded_error", "message": "Overloaded"}}
        frames.append((0, _named("error", error)))
        return frames
    frames.append((0, _named("content_block_stop", {"index": 0})))
    stop = "end_turn"
    if "tools" in tags:
        stop = "tool_use"
        block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
        frames.append((0, _named("content_block_start", {"index": 1, "content_block": block})))
        for piece in ['{"city":', ' "Paris"}']:
            delta = {"index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}}
            frames.append((delay, _named("content_block_delta", delta)))
        frames.append((0, _named("content_block_stop", {"index": 1})))
    output = {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 20}}
    frames.append((0, _named("message_delta", output)))
    frames.append((0, _named("message_stop", {})))
    return frames


def main() -> None:
    """``python -m tests.fake_openai --port 8100``: run the fake upstream on its own."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    server = FakeOpenAI()
    config = uvicorn.Config(
        server.app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="off",
        interface="asgi3",
    )
    print(f"fake OpenAI upstream on http://127.0.0.1:{args.port}/v1")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
