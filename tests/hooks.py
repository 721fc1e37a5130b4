"""Settings hooks used by the test servers."""

from __future__ import annotations

import asyncio
from typing import Any

from django.http import HttpRequest


def state_from_query(request: HttpRequest, state: dict[str, Any]) -> None:
    """Add ``plan`` and ``tags`` from the query string (tests only: clients choose them)."""
    if "plan" in request.GET:
        state["plan"] = request.GET["plan"]
    state["tags"] = request.GET.getlist("tag")


#: The tasks waiting in ``park``, in order.
#: One entry per call of ``park``: set once that call was cancelled.
parked: list[asyncio.Event] = []


async def park(session: Any, channel_names: list[str]) -> None:
    """A connect hook that waits until it is cancelled, like a slow backlog query."""
    cancelled = asyncio.Event()
    parked.append(cancelled)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        # Django 6.1 runs the view in the handler's own task (a TaskGroup), earlier releases
        # in a task of its own: what every release does is cancel the view.
        cancelled.set()
        raise
