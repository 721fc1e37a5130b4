"""Bench views of the LLM path: ``stream_chat`` answered through ``llm_response`` or a generation.

Both ask the upstream named by ``OPENAI_BASE_URL`` (the fake one, on loopback) for ``?n=``
tokens with the tag syntax of ``tests.fake_openai``. Nothing here touches the database: the
generation's owner is a fixed digest instead of the request's user or session, so the figures
are the library's (SDK request, parsing, coalescing, sessions, the channel), not the demo's.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase

from stream_app.llm.generations import create_generation, owner_digest
from stream_app.llm.openai import stream_chat
from stream_app.llm.responses import llm_response
from stream_app.llm.views import stream_generation

__all__ = ["chat", "generation"]

# Every bench generation has the same owner: nobody else watches them.
_OWNER = "bench:llm"


def _messages(request: HttpRequest) -> list[dict[str, str]]:
    """One user message whose tags tell the fake upstream how long to answer."""
    return [{"role": "user", "content": f"[tokens={int(request.GET['n'])}]"}]


async def chat(request: HttpRequest) -> HttpResponseBase:
    """``?n=``: a direct stream (``llm_response``, our named events).

    Coalescing is whatever the settings say (``STREAM_LLM_COALESCE_MS`` / ``_CHARS`` in the
    server's environment), as it would be in a project.
    """
    return await llm_response(request, stream_chat(_messages(request)))


async def generation(request: HttpRequest) -> HttpResponseBase:
    """``?n=``: the same answer as a generation, streamed to this request as it is produced.

    Coalescing: ``STREAM_GENERATION_COALESCE_MS`` / ``_CHARS`` (50 ms / 400 chars by default).
    """
    created = create_generation(owner_digest(_OWNER))
    return await stream_generation(request, created, stream_chat(_messages(request)))
