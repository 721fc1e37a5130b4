"""Logging out ends the streams opened with that Django session, on every worker.

``logout()`` deletes the Django session, but a stream opened with it is already authorised:
without this it would go on receiving the user's private events (``user:<pk>``, ``staff``) for
as long as the connection lasts. So:

1. ``stream_view`` hands each authenticated stream to ``end_on_logout``, which remembers it in
   this process under an opaque digest of the Django session key (an HMAC keyed with
   ``SECRET_KEY``; the key itself is never stored or sent) and makes sure this worker listens
   to the internal channel ``stream_app.logout``.
2. On ``user_logged_out`` (sent by ``logout()`` and ``alogout()`` in whichever process serves
   the logout) the digest is published through the backend on that channel, so every worker
   receives it (memory: this process; Redis: every worker, also after a listener reconnect).
3. Each worker ends the streams opened with that session at once: they leave their channels
   (nothing more is queued) and close with ``close_reason == "logout"``. The browser's
   EventSource reconnects, now anonymous, and is refused the private channels (403).

Policy: the streams of the session that logged out end; the same user's streams in other
browsers and devices belong to other sessions, which are still logged in, and go on.

The control message cannot be forged or replayed: its event type starts with ``stream_app.``,
which ``broadcast`` (and so the publish endpoint) refuses; no client may subscribe to the
internal channel (``check_subscribe``), so history never replays it to anyone.

Limits: a session ended without ``logout()`` (deleted in the database, expired, invalidated
by a password change elsewhere) does not end its streams; ``MAX_LIFETIME`` bounds those. A
session whose key was cycled after the stream opened (``cycle_key()``, which
``update_session_auth_hash`` calls after a password change in that session) no longer matches
the digest: its earlier streams end at ``MAX_LIFETIME``. If the backend is unavailable at
logout the streams stay open; that is logged as an error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.contrib.auth.signals import user_logged_out
from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from .backends import get_backend
from .backends.base import Backend, BackendUnavailable, Message, NotServingStreams
from .channels import leave_all, on_control
from .replay import SUBSCRIBE_TIMEOUT

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["CHANNEL", "EVENT", "connect_receivers", "end_on_logout", "login_digest"]

logger = logging.getLogger("stream_app")

#: The internal channel every worker with an authenticated stream listens to.
CHANNEL = "stream_app.logout"
#: The control event type (reserved: ``broadcast`` refuses ``stream_app.*`` types).
EVENT = "stream_app.logout"

# This process's authenticated streams by the digest of the Django session that opened them.
_streams: dict[str, set[Session]] = {}
# The backend this process listens to CHANNEL on (a new one after reset_backend()).
_listening: Backend | None = None


def login_digest(session_key: str) -> str:
    """The opaque digest of a Django session key that a logout message carries."""
    return salted_hmac("stream_app.logout", session_key, algorithm="sha256").hexdigest()


def _session_key(request: HttpRequest | None) -> str | None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    return key if isinstance(key, str) and key else None


async def end_on_logout(request: HttpRequest, user: Any, session: Session) -> None:
    """Remember an authenticated stream, so that logging out of its Django session ends it.

    Returns once this worker receives logout messages (waits up to ``SUBSCRIBE_TIMEOUT`` for
    the backend). Streams of anonymous users, or without a Django session, are not tracked.
    """
    key = _session_key(request)
    if key is None or not user.is_authenticated:
        return
    digest = login_digest(key)
    _streams.setdefault(digest, set()).add(session)
    session.on_close(lambda closed: _forget(digest, closed))
    global _listening
    backend = get_backend()
    if _listening is not backend:
        _listening = backend
        backend.subscribe(CHANNEL)
    await backend.ready(CHANNEL, SUBSCRIBE_TIMEOUT)


def _forget(digest: str, session: Session) -> None:
    streams = _streams.get(digest)
    if streams is not None:
        streams.discard(session)
        if not streams:
            del _streams[digest]


def _logged_out(message: Message) -> None:
    """The control handler, in each worker's event loop: end that session's streams."""
    for session in list(_streams.pop(message.data, ())):
        # Leave the channels first: nothing published after the logout is queued any more.
        leave_all(session)
        session.close_reason = "logout"
        session.close()


def _on_user_logged_out(
    sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any
) -> None:
    """``user_logged_out`` receiver: tell every worker to end the session's streams."""
    key = _session_key(request)
    if user is None or key is None:
        return
    try:
        get_backend().publish_sync(Message(CHANNEL, login_digest(key), EVENT))
    except NotServingStreams:
        # A process-local backend where no stream is served: there is no stream to end.
        return
    except BackendUnavailable:
        logger.error(
            "could not end the streams of a session that logged out: the backend is "
            "unavailable (they end when the client leaves or at MAX_LIFETIME)"
        )


def connect_receivers() -> None:
    """Connect the logout receiver and the control handler (``AppConfig.ready``)."""
    on_control(EVENT, _logged_out)
    user_logged_out.connect(_on_user_logged_out, dispatch_uid="stream_app.logout")
