"""Django signals sent by sessions and channels.

Receivers run synchronously inside the event loop: keep them quick and make no ORM calls
(hand such work to a task with ``sync_to_async``).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["broadcast_sent", "session_connected", "session_disconnected"]

#: A session started streaming. Arguments: ``session``.
session_connected = Signal()
#: A session ended. Arguments: ``session``, ``reason`` ("closed", "disconnect", "slow_consumer",
#: "write_timeout", "shutdown", "lifetime", "logout").
session_disconnected = Signal()
#: An event was published on a channel. Arguments: ``channel``, ``id``, ``event``, ``data`` (the
#: payload as sent: text, JSON for anything else) and ``filter`` (as given to ``broadcast``).
broadcast_sent = Signal()
