"""Views and a middleware for tests/test_handshake.py: what each part of a request saw."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.signals import request_started
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from stream_app import create_session
from stream_app.asgi import stream_endpoint

# What happened in this server process, read back by the tests over HTTP.
seen: dict[str, Any] = {"started": [], "leftover": [], "slow": 0, "cancelled": 0}
_tasks: set[asyncio.Task[None]] = set()


def _on_started(sender: object, **kwargs: Any) -> None:
    seen["started"].append(threading.get_ident())


request_started.connect(_on_started, dispatch_uid="tests.handshake_views")


class RecordingMiddleware:
    """Sync- and async-capable: Django picks its mode from the chain it is in.

    Adds ``X-Chain`` (``sync``/``async``) and ``X-Middleware-Thread`` (the thread its request
    half ran on) to every response.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        request.middleware_thread = threading.get_ident()  # type: ignore[attr-defined]
        return self._mark(self.get_response(request), "sync", request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request.middleware_thread = await sync_to_async(threading.get_ident)()  # type: ignore[attr-defined]
        return self._mark(await self.get_response(request), "async", request)

    @staticmethod
    def _mark(response: HttpResponseBase, chain: str, request: HttpRequest) -> HttpResponseBase:
        response["X-Chain"] = chain
        response["X-Middleware-Thread"] = str(request.middleware_thread)  # type: ignore[attr-defined]
        return response


async def _threads(request: HttpRequest) -> dict[str, Any]:
    return {
        "view_sync_thread": await sync_to_async(threading.get_ident)(),
        "view_sync_thread_name": await sync_to_async(lambda: threading.current_thread().name)(),
        "middleware_thread": getattr(request, "middleware_thread", None),
        "started_thread": seen["started"][-1] if seen["started"] else None,
    }


async def plain(request: HttpRequest) -> JsonResponse:
    """Not a stream endpoint: where this request's thread-sensitive code ran."""
    return JsonResponse(await _threads(request))


@stream_endpoint
async def endpoint(request: HttpRequest) -> HttpResponseBase:
    """A stream endpoint: the same figures as the first event, then it stays open."""
    session = await create_session(request, keep_alive=None)
    session.push(await _threads(request), "threads")
    return session.response


@stream_endpoint
async def leftover(request: HttpRequest) -> HttpResponseBase:
    """Starts a task that calls thread-sensitive code after this view has returned."""

    async def later() -> None:
        await asyncio.sleep(0.2)
        try:
            thread = await sync_to_async(threading.current_thread)()
            seen["leftover"].append(thread.name)
        except RuntimeError as exc:
            seen["leftover"].append(f"error: {exc}")

    task = asyncio.ensure_future(later())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    session = await create_session(request, keep_alive=None)
    session.push("started", "ready")
    return session.response


@stream_endpoint
async def slow(request: HttpRequest) -> HttpResponseBase:
    """Takes 30 s before answering; counts its calls and being cancelled (the client left)."""
    seen["slow"] += 1
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        seen["cancelled"] += 1
        raise
    return HttpResponse("late")


@stream_endpoint
async def broken(request: HttpRequest) -> HttpResponseBase:
    """Raises: Django's handler answers 500."""
    raise ValueError("broken on purpose")


async def report(request: HttpRequest) -> JsonResponse:
    """What this process saw."""
    return JsonResponse(
        {
            "leftover": seen["leftover"],
            "slow": seen["slow"],
            "cancelled": seen["cancelled"],
            "threads": sorted(t.name for t in threading.enumerate()),
        }
    )
