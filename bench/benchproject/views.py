"""Bench views around our endpoints: the fan-out listener is the demo's own ``/sse/``."""

from __future__ import annotations

import asyncio
import threading
import time

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from bench.pacing import paced
from stream_app import create_response, get_channel
from stream_app.sessions import Session
from stream_app.sessions import stats as session_stats

CHANNEL = "bench"
# Strong references: the loop keeps only weak ones to running tasks.
_tasks: set[asyncio.Task[None]] = set()


async def _broadcast(count: int, rate: float) -> None:
    channel = get_channel(CHANNEL)
    async for index in paced(count, rate):
        await channel.abroadcast({"t": time.time(), "i": index})


@csrf_exempt
async def broadcast(request: HttpRequest) -> HttpResponse:
    """POST ``?k=&rate=``: broadcast ``k`` stamped events on ``bench``, ``rate`` per second.

    Published once, from this worker, through the configured backend: with Redis every worker
    delivers them to its own listeners.
    """
    task = asyncio.ensure_future(_broadcast(int(request.GET["k"]), float(request.GET["rate"])))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return JsonResponse({}, status=202)


async def tokens(request: HttpRequest) -> HttpResponse:
    """``?n=``: stream ``n`` tiny events with backpressure (``session.iterate``), then close."""
    count = int(request.GET["n"])

    async def run(session: Session) -> None:
        await session.iterate(range(count))

    return await create_response(request, run)


async def stats(request: HttpRequest) -> JsonResponse:
    """Streams open in this process, listeners on ``bench``, and OS threads."""
    return JsonResponse(
        {
            "open": session_stats.open,
            "listeners": get_channel(CHANNEL).session_count,
            "threads": threading.active_count(),
        }
    )
