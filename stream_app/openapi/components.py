"""The parts the operations of the OpenAPI document share: media types, schemas, security."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from ..channels import CHANNEL_NAME_RE
from ..lastevent import MAX_LAST_EVENT_ID

__all__ = [
    "ASGI_REQUIRED",
    "BACKEND_UNAVAILABLE",
    "BAD_JSON",
    "BODY_ERRORS",
    "CHANNEL",
    "JSON",
    "LAST_EVENT_ID",
    "LAST_EVENT_ID_QUERY",
    "SSE",
    "Operation",
    "Schema",
    "components",
    "error_response",
    "json_body",
    "json_response",
    "object_schema",
    "ref",
]

JSON = "application/json"
SSE = "text/event-stream"

Schema = dict[str, Any]
Operation = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to the schema ``name`` of ``components()``."""
    return {"$ref": f"#/components/schemas/{name}"}


def error_response(description: str, *codes: str) -> Schema:
    """A JSON error response whose ``error`` is one of ``codes``."""
    schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def json_body(schema: Schema) -> Schema:
    """A required JSON request body."""
    return {"required": True, "content": {JSON: {"schema": schema}}}


def json_response(description: str, schema: Schema) -> Schema:
    """A response with a JSON body of ``schema``."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def object_schema(required: list[str], **properties: Schema) -> Schema:
    """A JSON object with ``properties``, of which ``required`` must be present."""
    return {"type": "object", "required": required, "properties": properties}


CHANNEL: Schema = {
    "type": "string",
    "pattern": f"^{CHANNEL_NAME_RE.pattern}$",
    "description": "1 to 100 letters, digits or _ - . : @",
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "description": "Resume after this event id (sent by EventSource when it reconnects); an id "
    "that is too long or holds a line break is ignored.",
    "schema": {"type": "string", "maxLength": MAX_LAST_EVENT_ID},
}
LAST_EVENT_ID_QUERY = {
    **LAST_EVENT_ID,
    "name": "lastEventId",
    "in": "query",
    "description": "Last-Event-ID, for clients that cannot set headers (the header wins).",
}
BAD_JSON = ("invalid_json", "invalid_request")
BODY_ERRORS = {
    "413": error_response("The body is larger than the endpoint's limit.", "too_large"),
    "415": error_response(
        "The body is not Content-Type: application/json (UTF-8).", "unsupported_media_type"
    ),
}
ASGI_REQUIRED = error_response(
    "The project is served over WSGI, where nothing can stream.", "asgi_required"
)
BACKEND_UNAVAILABLE = error_response("The backend (Redis) did not answer.", "backend_unavailable")


def components() -> dict[str, Any]:
    """The document's ``components``: the shared schemas and the security schemes."""
    csrf_header = settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-")
    return {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "description": "A stable code."},
                    "message": {"type": "string", "description": "For people; may change."},
                    "channel": {"type": "string", "description": "The channel concerned."},
                },
            },
            "ServerSentEvent": object_schema(
                ["data", "event"],
                event={"type": "string"},
                data={"type": "string", "description": "JSON text, for our events."},
                id={"type": "string"},
                retry={"type": "integer", "minimum": 0},
            ),
        },
        "securitySchemes": {
            "publishToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "STREAM_APP['PUBLISH_TOKEN']: a service credential.",
            },
            "metricsToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "STREAM_APP['METRICS_TOKEN'], when it is set.",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": settings.SESSION_COOKIE_NAME,
                "description": "A Django session (log in through the project's login page).",
            },
            "csrfToken": {
                "type": "apiKey",
                "in": "header",
                "name": csrf_header,
                "description": "Django's CSRF token, with its cookie "
                f"({settings.CSRF_COOKIE_NAME}).",
            },
        },
    }
