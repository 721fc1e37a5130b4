"""Structured log lines on the ``stream_app`` logger: ``event=<what> key=value ...``.

One line per session connect (INFO) and disconnect (INFO), and per publish the backend refused
(WARNING), in logfmt style so that log pipelines (Loki, Vector, CloudWatch) can parse them with
no custom pattern. Values with spaces, quotes or ``=`` are double-quoted with JSON escapes.

The session receivers are connected in ``AppConfig.ready()`` and return at once when the
logger is not enabled for INFO: disabled logging costs one level check per connect.
"""

from __future__ import annotations

import json
import logging
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

from .redact import redact
from .signals import session_connected, session_disconnected
from .stats import stats

if TYPE_CHECKING:
    from .session import Session

__all__ = ["connect_receivers", "format_fields", "log_publish_error"]

logger = logging.getLogger("stream_app")
_PID = os.getpid()
# Per session: an id for matching its two lines, when it connected, and its channels (they are
# deregistered before the disconnect signal is sent).
_open: weakref.WeakKeyDictionary[Session, tuple[str, float, str]] = weakref.WeakKeyDictionary()
_QUOTE = frozenset(' "=\\')


def format_fields(**fields: object) -> str:
    """``key=value`` pairs separated by spaces; None values are left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in _QUOTE or c < " " or c == "\x7f" for c in text):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _on_connect(sender: object, session: Session, **kwargs: Any) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    # stats.opened was just incremented for this session: unique within the process.
    sid = f"{_PID}-{stats.opened}"
    channels = ",".join(sorted(c.name for c in session.channels or ()))
    _open[session] = (sid, time.monotonic(), channels)
    request = session.request
    meta = request.META if request is not None else {}
    logger.info(
        "event=session_connect %s",
        format_fields(
            session=sid,
            channels=channels or None,
            path=request.path if request is not None else None,
            remote=meta.get("REMOTE_ADDR"),
            forwarded_for=meta.get("HTTP_X_FORWARDED_FOR"),
            user=session.state.get("user_id"),
            last_event_id=session.last_event_id,
            open=stats.open,
        ),
    )


def _on_disconnect(sender: object, session: Session, reason: str, **kwargs: Any) -> None:
    opened = _open.pop(session, None)
    if not logger.isEnabledFor(logging.INFO):
        return
    sid, started, channels = opened if opened is not None else (None, None, None)
    duration = f"{time.monotonic() - started:.3f}" if started is not None else None
    logger.info(
        "event=session_disconnect %s",
        format_fields(
            session=sid,
            reason=reason,
            channels=channels or None,
            duration_s=duration,
            open=stats.open,
        ),
    )


def log_publish_error(channel: str, exc: BaseException) -> None:
    """Log a broadcast that the backend refused (WARNING)."""
    if logger.isEnabledFor(logging.WARNING):
        logger.warning(
            "event=publish_error %s",
            format_fields(channel=channel, error=type(exc).__name__, message=redact(str(exc))),
        )


def connect_receivers() -> None:
    """Connect the connect/disconnect receivers (idempotent; called by ``AppConfig.ready``)."""
    session_connected.connect(_on_connect, dispatch_uid="stream_app.logs.connect")
    session_disconnected.connect(_on_disconnect, dispatch_uid="stream_app.logs.disconnect")
