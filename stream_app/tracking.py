"""Sessions created while one request is handled, so that the handler can end those it does
not stream."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

__all__ = ["RequestSessions", "current_tracker", "track_sessions"]


class RequestSessions:
    """The sessions created while one request is handled (see ``track_sessions``).

    A session whose response never streams (the client left while the view ran, the view
    failed after creating it, or another response was sent) would otherwise stay registered on
    its channels and keep its connection slot for good: nothing else ever ends it.
    """

    __slots__ = ("ended", "sessions")

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.ended = False

    def add(self, session: Session) -> None:
        """Track ``session``; once the request has ended, abandon it at once."""
        if self.ended:
            # The handler has given up on the request (the client left) while the view still
            # runs in its thread: this session can never stream.
            session.abandon()
        else:
            self.sessions.append(session)

    def end(self, keep: Session | None = None) -> None:
        """The request is over: abandon every session it created but ``keep``, and later ones."""
        self.ended = True
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            if session is not keep:
                session.abandon()


_current: contextvars.ContextVar[RequestSessions | None] = contextvars.ContextVar(
    "stream_app_current", default=None
)


@contextmanager
def track_sessions() -> Iterator[RequestSessions]:
    """Track the sessions created in this context (for an ASGI handler, around one request).

    The handler calls ``end(keep=...)`` on the result when the request is over, keeping the
    session it streams itself, if any.
    """
    tracker = RequestSessions()
    token = _current.set(tracker)
    try:
        yield tracker
    finally:
        _current.reset(token)


def current_tracker() -> RequestSessions | None:
    """The tracker of the request being handled in this context, if any."""
    return _current.get()
