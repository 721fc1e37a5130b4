"""The OpenAPI 3.1 document of the HTTP endpoints the app ships, and the view that serves it.

``openapi_document()`` describes every route of ``stream_app.urls`` and, when the project
mounted it, ``stream_app.llm.urls``: request bodies, who may call (``PUBLISH_TOKEN`` bearer,
Django session and CSRF token, permissions), every status a view answers and the JSON error
shape ``{"error": code, "message": ..., ...}`` with the codes each status can carry. Paths come
from ``reverse()``, so they are where the project mounted the URLconfs. It is data kept beside
the views by hand: ``tests/test_openapi.py`` fails when a route, a method or a status drifts,
and fuzzes a real server against the document with schemathesis.

``GET <mount>/openapi.json`` serves it. The name cannot shadow a channel: channel routes end
with a slash (``<channel>/``), this one does not.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import csrf_exempt

from .components import Operation, components
from .operations import (
    DEMO,
    GENERATION_CANCEL,
    GENERATION_STREAM,
    HEALTH,
    MARK_READ,
    METRICS,
    OPENAPI,
    PUBLISH,
    safe,
    stream_operation,
)

__all__ = ["OPENAPI_VERSION", "openapi_document", "openapi_view"]

OPENAPI_VERSION = "3.1.1"
# Stand-ins reversed into the URLs, then turned into OpenAPI path templates.
_PLACEHOLDERS = {"channel": "__channel__", "generation_id": "__generation_id__"}


def _routes() -> list[tuple[str, dict[str, Any], dict[str, Operation]]]:
    """(URL name, reverse kwargs, operations by method) of every route of both URLconfs."""
    channel = {"channel": _PLACEHOLDERS["channel"]}
    generation = {"generation_id": _PLACEHOLDERS["generation_id"]}
    stream = stream_operation(
        "Subscribe to channels",
        "Server-Sent Events from the channels of `?channel=` (repeated).",
        channel_in_path=False,
    )
    per_channel = stream_operation(
        "Subscribe to the channel of the path",
        "Server-Sent Events from the channel in the path (or those of `?channel=`).",
        channel_in_path=True,
    )
    return [
        ("stream_app:stream", {}, safe(stream)),
        ("stream_app:publish", {}, {"post": PUBLISH}),
        ("stream_app:notifications_read", {}, {"post": MARK_READ}),
        ("stream_app:notifications_demo", {}, safe(DEMO)),
        ("stream_app:metrics", {}, safe(METRICS)),
        ("stream_app:health", {}, safe(HEALTH)),
        ("stream_app:openapi", {}, safe(OPENAPI)),
        ("stream_app:channel", channel, safe(per_channel)),
        ("stream_llm:generation-stream", generation, safe(GENERATION_STREAM)),
        ("stream_llm:generation-cancel", generation, {"post": GENERATION_CANCEL}),
    ]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the mounted routes (see the module docstring)."""
    paths: dict[str, dict[str, Operation]] = {}
    for name, kwargs, operations in _routes():
        try:
            path = reverse(name, kwargs=kwargs)
        except NoReverseMatch:
            # That URLconf is not mounted (generations are optional).
            continue
        for argument, placeholder in _PLACEHOLDERS.items():
            path = path.replace(placeholder, f"{{{argument}}}")
        paths[path] = operations
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "django-stream-llm",
            "version": "1.0",
            "description": "Server-Sent Events, publishing, notifications and generations. Every "
            'refusal is JSON: {"error": code, "message": ...}.',
        },
        "paths": paths,
        "components": components(),
    }


@csrf_exempt  # it changes nothing and takes GET only: a POST gets a JSON 405, not a CSRF page
async def openapi_view(request: HttpRequest) -> JsonResponse:
    """``GET``: the OpenAPI document (``openapi_document()``)."""
    if request.method not in ("GET", "HEAD"):
        return JsonResponse(
            {"error": "method_not_allowed", "message": "GET the document"}, status=405
        )
    return JsonResponse(openapi_document())
