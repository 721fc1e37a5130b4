"""The embedded offline model: a canned but plausible answer, streamed in the OpenAI wire format.

Used when no ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (nor ``LLM_API_KEY`` / ``LLM_BASE_URL``)
is configured, so the demo works on a fresh machine with no network. It plugs in *below* the
``openai`` SDK as an ``httpx2`` transport (the HTTP library the SDK uses): the SDK sends a real
request and parses real ``data: {chunk}`` ... ``data: [DONE]`` bytes, so the offline path runs
exactly the code a real provider does (adapter, errors, coalescing, generations).

``OfflineModel`` is pure: it writes the answer and its chunks. ``OfflineTransport`` paces them
at ``rate`` tokens per second (``LLM_OFFLINE_RATE``; 0 streams as fast as possible).

Continuation, deterministically: a request whose last message is an ``assistant`` message
holding the start of the answer gets only the rest (what a generation taken over by another
worker sends, see ``stream_app.llm.takeover``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..extras import MissingExtra

try:
    import httpx2
except ImportError as exc:
    raise MissingExtra("llm", "The offline model (stream_app.llm.offline)") from exc

__all__ = ["OFFLINE_BASE_URL", "OfflineModel", "OfflineTransport"]

#: The base URL the offline client uses; nothing is ever sent to it.
OFFLINE_BASE_URL = "http://offline.stream-app.invalid/v1"
MODEL_NAME = "offline"
_TOKEN = re.compile(r"\s*\S+|\s+")

_ANSWER = """\
You are talking to the **offline model** of django-stream-llm: no `OPENAI_API_KEY` or \
`OPENAI_BASE_URL` is configured, so this answer is written locally and streamed through the \
same code path a real model uses.

You asked: _{question}_

Here is how this page got the answer to you:

1. Your message was saved and a **generation** started: a background task that publishes \
each token to its own channel.
2. The request that started it streams those tokens back as server-sent events.
3. If you reload the page now, the answer *resumes* where it was, from `Last-Event-ID`.

A view that streams a model looks like this:

```python
async def chat(request):
    events = stream_chat([{{"role": "user", "content": "Hi"}}])
    return await llm_response(request, events)
```

Set `OPENAI_API_KEY` (or point `OPENAI_BASE_URL` at vLLM, Ollama or llama.cpp) to talk to a \
real model."""

_GREETING = """\
Hello! I am the **offline model** of django-stream-llm. No API key is configured, so I can \
only stream prepared answers, but every token still travels the real path: the OpenAI wire \
format, a generation on its own channel, and server-sent events to this page. Ask me anything \
to see a longer answer."""


class OfflineModel:
    """Writes the offline answer to a chat request and the OpenAI chunks that carry it."""

    def answer(self, messages: list[dict[str, Any]]) -> str:
        """A markdown answer to the last user message."""
        question = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                question = _text_of(message.get("content"))
                break
        words = question.strip().lower().split()
        if not words or words[0].strip("!.,") in ("hi", "hello", "hey"):
            return _GREETING
        # The question is quoted in italics: drop the emphasis marks that would end them early,
        # and the line breaks that would end the paragraph.
        quoted = " ".join(question.replace("_", " ").replace("*", " ").split())[:200]
        return _ANSWER.format(question=quoted)

    def continued(self, messages: list[dict[str, Any]], text: str) -> str:
        """The start of ``text`` given as a trailing assistant message to continue, else ""."""
        if not messages or messages[-1].get("role") != "assistant":
            return ""
        prefix = _text_of(messages[-1].get("content"))
        return prefix if text.startswith(prefix) else ""

    def tokens(self, text: str) -> list[str]:
        """Split ``text`` into word-sized deltas (a word with its leading whitespace)."""
        return _TOKEN.findall(text)

    def chunks(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed answer to ``request``."""
        messages = request.get("messages") or []
        text = self.answer(messages)
        tokens = self.tokens(text[len(self.continued(messages, text)) :])
        base = {
            "id": f"chatcmpl-offline-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL_NAME,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "choices": [choice]}

        yield chunk({"role": "assistant", "content": ""})
        for token in tokens:
            yield chunk({"content": token})
        yield chunk({}, "stop")
        if (request.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(_text_of(m.get("content")).split()) for m in messages)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": len(tokens),
                "total_tokens": prompt + len(tokens),
            }
            yield {**base, "choices": [], "usage": usage}

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed ``chat.completion`` answer."""
        text = self.answer(request.get("messages") or [])
        count = len(self.tokens(text))
        return {
            "id": f"chatcmpl-offline-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL_NAME,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": count, "total_tokens": count},
        }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class _PacedStream(httpx2.AsyncByteStream):
    """The SSE body: one ``data:`` frame per chunk, paced at ``rate`` chunks per second."""

    def __init__(self, chunks: Iterator[dict[str, Any]], rate: float) -> None:
        self.chunks = chunks
        self.rate = rate
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        step = 1 / self.rate if self.rate > 0 else 0.0
        due = loop.time()
        for index, chunk in enumerate(self.chunks):
            if self.closed:
                return
            if step:
                # Absolute schedule: timer jitter does not accumulate into a slower rate.
                due += step
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif index % 64 == 63:
                await asyncio.sleep(0)
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        self.closed = True


class OfflineTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that answers OpenAI chat-completion requests offline."""

    def __init__(self, rate: float = 40.0, model: OfflineModel | None = None) -> None:
        self.rate = rate
        self.model = model or OfflineModel()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer ``POST .../chat/completions`` (streamed or not) and ``GET .../models``."""
        path = request.url.path
        if request.method == "GET" and path.endswith("/models"):
            body = {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]}
            return httpx2.Response(200, json=body, request=request)
        if request.method != "POST" or not path.endswith("/chat/completions"):
            error = {"message": f"the offline model has no {path}", "type": "invalid_request"}
            return httpx2.Response(404, json={"error": error}, request=request)
        try:
            payload = json.loads(await request.aread())
        except ValueError:
            error = {"message": "the body is not JSON", "type": "invalid_request_error"}
            return httpx2.Response(400, json={"error": error}, request=request)
        if not payload.get("stream"):
            return httpx2.Response(200, json=self.model.completion(payload), request=request)
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=_PacedStream(self.model.chunks(payload), self.rate),
            request=request,
        )
