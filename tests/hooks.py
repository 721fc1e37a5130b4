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
parked: list[asyncio.Task[Any]] = []


async def park(session: Any, channel_names: list[str]) -> None:
    """A connect hook that waits until it is cancelled, like a slow backlog query."""
    task = asyncio.current_task()
    assert task is not None
    parked.append(task)
    await asyncio.sleep(3600)
