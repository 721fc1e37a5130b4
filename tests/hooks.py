"""Settings hooks used by the test servers."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def state_from_query(request: HttpRequest, state: dict[str, Any]) -> None:
    """Add ``plan`` and ``tags`` from the query string (tests only: clients choose them)."""
    if "plan" in request.GET:
        state["plan"] = request.GET["plan"]
    state["tags"] = request.GET.getlist("tag")
