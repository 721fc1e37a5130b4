"""docs/how-to/drf.md: an SSE stream from a Django REST Framework view.

DRF's ``APIView`` is synchronous: it authenticates, checks permissions and negotiates the
content type in a thread as usual, then returns an ``SSEResponse`` whose callback runs on the
event loop once the stream starts.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from stream_app.channels import get_channel, subscribe
from stream_app.responses import SSEResponse, Stream


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept ``Accept: text/event-stream`` (EventSource's).

    The stream itself is not rendered by DRF: the view returns an ``SSEResponse``. Only DRF's
    own error responses (403...) pass through here, as JSON.
    """

    media_type = "text/event-stream"
    format = "sse"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        return JSONRenderer().render(data)


class MyEventsView(APIView):
    """The signed-in user's events: everything broadcast to ``user:<pk>``."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [EventStreamRenderer, JSONRenderer]

    def get(self, request: Request) -> SSEResponse:
        # Read the user here, in the request's thread, not later in the stream.
        user = request.user
        channel = get_channel(f"user:{user.pk}")

        async def start(stream: Stream) -> None:
            # Registers the session (it stays open while registered) and replays what a
            # reconnecting client missed since its Last-Event-ID.
            await subscribe(stream.session, [channel])
            stream.send({"username": user.get_username()}, event="ready")

        # request: for Last-Event-ID and HEAD (DRF's Request passes them through).
        return SSEResponse(start, request=request)
