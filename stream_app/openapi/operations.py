"""The operations of the OpenAPI document, one constant per endpoint (HEAD twins derived)."""

from __future__ import annotations

from ..conf import app_settings
from .components import (
    ASGI_REQUIRED,
    BACKEND_UNAVAILABLE,
    BAD_JSON,
    BODY_ERRORS,
    CHANNEL,
    LAST_EVENT_ID,
    LAST_EVENT_ID_QUERY,
    SSE,
    Operation,
    error_response,
    json_body,
    json_response,
    object_schema,
    ref,
)

__all__ = [
    "DEMO",
    "GENERATION_CANCEL",
    "GENERATION_STREAM",
    "HEALTH",
    "MARK_READ",
    "METRICS",
    "OPENAPI",
    "PUBLISH",
    "head",
    "safe",
    "stream_operation",
]


def stream_operation(summary: str, description: str, channel_in_path: bool) -> Operation:
    """GET of ``stream_view``, on its own route or on the ``<channel>/`` one."""
    most = app_settings.MAX_CHANNELS_PER_STREAM
    query = {
        "name": "channel",
        "in": "query",
        "description": f"A channel to subscribe to; repeat it for several (at most {most}). "
        + ("It replaces the channel of the path. " if channel_in_path else "")
        + "DEFAULT_CHANNELS are added.",
        "schema": {"type": "array", "items": CHANNEL},
        "style": "form",
        "explode": True,
    }
    path = {"name": "channel", "in": "path", "required": True, "schema": CHANNEL}
    parameters = [query, *([path] if channel_in_path else []), LAST_EVENT_ID, LAST_EVENT_ID_QUERY]
    return {
        "summary": summary,
        "description": description,
        "operationId": "stream_channel" if channel_in_path else "stream",
        "tags": ["streams"],
        "parameters": parameters,
        "security": [{}, {"session": []}],
        "responses": {
            "200": {
                "description": "The stream: first the events after Last-Event-ID (or a `reset` "
                'event when they are gone), then `ready` ({"channels": [...]}), then live '
                "events and keep-alive comments. It never ends by itself.",
                "content": {SSE: {"schema": ref("ServerSentEvent")}},
            },
            "400": error_response(
                "A name outside the channel syntax, too many channels, or too many query fields.",
                "invalid_channel",
                "too_many_channels",
                "invalid_request",
            ),
            "403": error_response("CAN_SUBSCRIBE refused a channel.", "forbidden"),
            "404": error_response(
                "CAN_SUBSCRIBE knows no such channel, or none was asked for.", "unknown_channel"
            ),
            "429": error_response(
                "MAX_CONNECTIONS_PER_USER or MAX_CONNECTIONS_PER_ADDRESS streams are open.",
                "too_many_connections",
            ),
            "500": ASGI_REQUIRED,
        },
    }


PUBLISH: Operation = {
    "summary": "Publish an event on a channel",
    "description": "Broadcast `data` to every session on the channel, on every worker. Allowed "
    "on every channel with the publish token; through a Django session with the permission "
    "`stream_app.publish` on the channels everyone may read (PUBLIC_CHANNELS, "
    "DEFAULT_CHANNELS) or `stream_app.publish_any` on every channel, and then only with the "
    "CSRF token.",
    "operationId": "publish",
    "tags": ["publishing"],
    "security": [{"publishToken": []}, {"session": [], "csrfToken": []}],
    "requestBody": json_body(
        {
            **object_schema(
                ["channel", "data"],
                channel=CHANNEL,
                data={"description": "Any JSON value: the event's data, as JSON."},
                event={
                    "type": ["string", "null"],
                    "description": "The event type (default `message`); no line break, and no "
                    "`stream_app.` prefix (reserved).",
                },
                filter={
                    "type": ["object", "null"],
                    "description": "A state filter: only sessions whose state matches receive "
                    'the event (`{"is_staff": true}`, `{"user_id__in": [1, 2]}`).',
                },
            ),
            "additionalProperties": False,
        }
    ),
    "responses": {
        "201": json_response(
            "Published: the event's id, usable as Last-Event-ID on every worker.",
            object_schema(["id", "channel"], id={"type": "string"}, channel={"type": "string"}),
        ),
        "400": error_response(
            "The body is not acceptable.",
            *BAD_JSON,
            "invalid_channel",
            "invalid_event",
            "invalid_filter",
        ),
        "403": error_response(
            "Neither the token nor a permission allows it, or the CSRF check failed.",
            "forbidden",
            "csrf_failed",
        ),
        **BODY_ERRORS,
        "503": BACKEND_UNAVAILABLE,
    },
}

# Positive ids within 64 bits, as JSON integers or decimal text.
IDS = {
    "type": "array",
    "maxItems": 500,
    "items": {
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
        ]
    },
}
MARK_READ: Operation = {
    "summary": "Mark notifications read",
    "description": "For the logged-in user: read notifications are no longer delivered when "
    "they connect (until they are sent again). Needs the CSRF token.",
    "operationId": "notifications_read",
    "tags": ["notifications"],
    "security": [{"session": [], "csrfToken": []}],
    "requestBody": json_body(object_schema(["ids"], ids=IDS)),
    "responses": {
        "200": json_response(
            "The ids among those sent that are now read.",
            object_schema(["read"], read={"type": "array", "items": {"type": "integer"}}),
        ),
        "400": error_response("The body is not acceptable.", *BAD_JSON, "invalid_ids"),
        "403": error_response(
            "Not logged in, or the CSRF check failed.", "login_required", "csrf_failed"
        ),
        **BODY_ERRORS,
    },
}

HTML = {"text/html": {"schema": {"type": "string"}}}
DEMO: Operation = {
    "summary": "A page that shows the notification UI",
    "operationId": "notifications_demo",
    "tags": ["notifications"],
    "responses": {"200": {"description": "The page.", "content": HTML}},
}

METRICS: Operation = {
    "summary": "Prometheus metrics of this worker",
    "description": "The Prometheus text exposition. With METRICS_TOKEN set, only with "
    "`Authorization: Bearer <METRICS_TOKEN>`.",
    "operationId": "metrics",
    "tags": ["operations"],
    "security": [{}, {"metricsToken": []}],
    "responses": {
        "200": {
            "description": "The metrics.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "401": error_response(
            "METRICS_TOKEN is set and the request does not carry it.", "forbidden"
        ),
        "501": error_response("prometheus-client is not installed.", "metrics_unavailable"),
    },
}

HEALTH_BODY = object_schema(
    ["status", "backend", "sessions"],
    status={"enum": ["ok", "unavailable"]},
    backend={"type": "string", "description": "The backend's class name."},
    reason={"enum": ["shutting_down", "backend_unreachable", "backend_timeout", "backend_error"]},
    sessions={"type": "integer", "description": "Sessions streaming in this worker."},
)
HEALTH: Operation = {
    "summary": "Whether this worker can stream and publish now",
    "description": "For load balancers: 200 when the backend answers a ping within "
    "HEALTH_TIMEOUT seconds, 503 when it does not or the worker is shutting down.",
    "operationId": "health",
    "tags": ["operations"],
    "responses": {
        "200": json_response("Healthy.", HEALTH_BODY),
        "503": json_response("Not able to take new streams; `reason` says why.", HEALTH_BODY),
    },
}

OPENAPI: Operation = {
    "summary": "This document",
    "operationId": "openapi",
    "tags": ["operations"],
    "responses": {"200": json_response("The OpenAPI document.", {"type": "object"})},
}

GENERATION_ID = {
    "name": "generation_id",
    "in": "path",
    "required": True,
    "description": "The generation's id (32 hexadecimal digits); any other value is unknown.",
    "schema": {"type": "string"},
}
GENERATION_STREAM: Operation = {
    "summary": "Replay and follow a generation",
    "description": "The generation's events after Last-Event-ID (from its start without one), "
    "then live until `done` or `error`, on any worker. Only its owner (the user, or the "
    "Django session of an anonymous visitor) can read it.",
    "operationId": "generation_stream",
    "tags": ["generations"],
    "parameters": [GENERATION_ID, LAST_EVENT_ID, LAST_EVENT_ID_QUERY],
    "security": [{"session": []}],
    "responses": {
        "200": {
            "description": "The generation's events, ending with `done` or `error`.",
            "content": {SSE: {"schema": ref("ServerSentEvent")}},
        },
        "204": {
            "description": "Unknown, expired, someone else's, orphaned for good, or finished "
            "and already seen: EventSource stops reconnecting."
        },
        "500": ASGI_REQUIRED,
        "503": BACKEND_UNAVAILABLE,
    },
}
GENERATION_CANCEL: Operation = {
    "summary": "Cancel a generation",
    "description": "Stops the upstream request on whichever worker runs it. Owner only; "
    "needs the CSRF token. No body.",
    "operationId": "generation_cancel",
    "tags": ["generations"],
    "parameters": [GENERATION_ID],
    "security": [{"session": [], "csrfToken": []}],
    "responses": {
        "202": json_response(
            "Asked to stop.", object_schema(["status"], status={"const": "cancelling"})
        ),
        "403": error_response("The CSRF check failed.", "csrf_failed"),
        "404": error_response("Unknown, or someone else's.", "unknown_generation"),
        "409": error_response("Already finished.", "already_finished"),
        "503": BACKEND_UNAVAILABLE,
    },
}


def head(operation: Operation) -> Operation:
    """The HEAD twin of a GET operation: the same statuses and headers, no body."""
    responses = {
        status: {"description": response["description"]}
        for status, response in operation["responses"].items()
    }
    return {**operation, "operationId": f"{operation['operationId']}_head", "responses": responses}


def safe(operation: Operation) -> dict[str, Operation]:
    """``get`` and ``head`` for an operation that only reads."""
    return {"get": operation, "head": head(operation)}
