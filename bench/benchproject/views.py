"""Bench views around our endpoints: the fan-out listener is the project's own ``/sse/``.

Broadcasts go to ``settings.BENCH_CHANNEL``: ``notifications`` in the realistic profile (a
channel whose notifications are delivered on connect), ``bench`` in the lean one.
"""

from __future__ import annotations

import asyncio
import threading
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from bench.benchproject.backends import history_reads
from bench.pacing import paced
from stream_app import create_response, get_channel
from stream_app.sessions import Session
from stream_app.sessions import stats as session_stats

# Strong references: the loop keeps only weak ones to running tasks.
_tasks: set[asyncio.Task[None]] = set()


def _channel() -> str:
    return str(settings.BENCH_CHANNEL)


async def _broadcast(count: int, rate: float) -> None:
    channel = get_channel(_channel())
    async for index in paced(count, rate):
        await channel.abroadcast({"t": time.time(), "i": index})


@csrf_exempt
async def broadcast(request: HttpRequest) -> HttpResponse:
    """POST ``?k=&rate=``: broadcast ``k`` stamped events, ``rate`` per second, in a task.

    Published once, from this worker, through the configured backend: with Redis every worker
    delivers them to its own listeners.
    """
    task = asyncio.ensure_future(_broadcast(int(request.GET["k"]), float(request.GET["rate"])))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return JsonResponse({}, status=202)


@csrf_exempt
async def publish(request: HttpRequest) -> JsonResponse:
    """POST ``?start=&count=[&channel=]``: publish events ``i = start..start+count-1`` one after
    the other and answer once the backend has taken the last (its id in ``last_id``)."""
    start, count = int(request.GET["start"]), int(request.GET["count"])
    channel = get_channel(request.GET.get("channel") or _channel())
    last_id = ""
    for index in range(start, start + count):
        last_id = await channel.abroadcast({"t": time.time(), "i": index})
    return JsonResponse({"last_id": last_id})


async def tokens(request: HttpRequest) -> HttpResponse:
    """``?n=``: stream ``n`` tiny events with backpressure (``session.iterate``), then close.

    The user is looked up first, as the plain Django yardstick does and any real stream would.
    """
    count = int(request.GET["n"])
    await request.auser()

    async def run(session: Session) -> None:
        await session.iterate(range(count))

    return await create_response(request, run)


async def stats(request: HttpRequest) -> JsonResponse:
    """Streams open in this process, listeners on the bench channel, OS threads, and the
    counters the reconnect storm reads (slow consumers, resets, history reads per channel)."""
    return JsonResponse(
        {
            "open": session_stats.open,
            "listeners": get_channel(_channel()).session_count,
            "threads": threading.active_count(),
            "slow_consumers": session_stats.slow_consumers,
            "replay_resets": session_stats.replay_resets,
            "history_reads": dict(history_reads),
        }
    )
