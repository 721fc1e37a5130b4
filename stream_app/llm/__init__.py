"""LLM streaming: model token streams as server-sent events, direct or as resumable generations.

::

    from stream_app.llm import stream_chat, llm_response

    async def ask(request):
        events = stream_chat([{"role": "user", "content": request.GET["q"]}])
        return await llm_response(request, events)            # or format="openai" / "vercel"

Modules, one job each:

- ``events``: the event types (``token``, ``tool_call``, ``usage``, ``done``, ``error``).
- ``openai``: the ``openai`` SDK adapter and client (the only module importing ``openai``).
- ``anthropic``: the optional ``anthropic`` SDK adapter.
- ``offline``: the embedded offline model, speaking the OpenAI wire format below the SDK.
- ``errors``: upstream failures mapped to stable codes.
- ``coalesce``: merging token deltas per N ms / N characters.
- ``formats``: our named events, the OpenAI wire format, the Vercel AI SDK UI message stream.
- ``responses``: ``llm_response``, a direct stream tied to one request.
- ``generations``: ``create_generation``, the producer task on its own channel.
- ``ending``: how a generation ends (its result, ``on_finish``, a last event never lost).
- ``registry``: where generations run and who owns them (``lookup`` from any worker).
- ``watch``: a generation's watcher (a cancel pushed from another worker, no listener left).
- ``leases``: a generation's use of the backend's leases (record, heartbeat renewal).
- ``takeover``: continuing a generation whose worker died, on another worker.
- ``views`` / ``urls``: start, resume (``Last-Event-ID``) and cancel generations over HTTP.

Names are re-exported lazily so importing ``stream_app.llm`` costs nothing until used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .anthropic import stream_anthropic
    from .coalesce import coalesce
    from .events import Done, Error, RawChunk, Token, ToolCall, Usage
    from .generations import Generation, GenerationResult, create_generation, shutdown_generations
    from .openai import adapt_stream, get_client, is_offline, stream_chat
    from .responses import llm_response
    from .views import request_owner, stream_generation

__all__ = [
    "Done",
    "Error",
    "Generation",
    "GenerationResult",
    "RawChunk",
    "Token",
    "ToolCall",
    "Usage",
    "adapt_stream",
    "coalesce",
    "create_generation",
    "get_client",
    "is_offline",
    "llm_response",
    "request_owner",
    "shutdown_generations",
    "stream_anthropic",
    "stream_chat",
    "stream_generation",
]

_EXPORTS = {
    "coalesce": "coalesce",
    "Done": "events",
    "Error": "events",
    "RawChunk": "events",
    "Token": "events",
    "ToolCall": "events",
    "Usage": "events",
    "Generation": "generations",
    "GenerationResult": "generations",
    "create_generation": "generations",
    "shutdown_generations": "generations",
    "stream_anthropic": "anthropic",
    "adapt_stream": "openai",
    "get_client": "openai",
    "is_offline": "openai",
    "stream_chat": "openai",
    "llm_response": "responses",
    "request_owner": "views",
    "stream_generation": "views",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream_app.llm' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
