"""Broadcast notifications: written in the admin or by code, delivered live and on connect.

::

    from stream_app.notifications import notify
    notify(user, "Export ready", "Your CSV is waiting.", level="success", link="/exports/")

- ``sending``: audiences as filter data, the ``notification`` event payload, sends with an
  audit row, scheduled sends claimed once across hosts, ``notify`` for ``user:<pk>`` channels.
- ``backlog``: the connect hook that delivers what a user missed, from the database.
- ``markup``: bodies as safe HTML (plain text or a markdown subset).
- ``views``: mark-read endpoint and a demo page with the toast UI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backlog import deliver_backlog
    from .sending import (
        anotify,
        asend_due,
        asend_notification,
        notify,
        send_due,
        send_notification,
    )

__all__ = [
    "anotify",
    "asend_due",
    "asend_notification",
    "deliver_backlog",
    "notify",
    "send_due",
    "send_notification",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package does not import the models before apps are ready.
    if name == "deliver_backlog":
        return import_module(".backlog", __name__).deliver_backlog
    if name in __all__:
        return getattr(import_module(".sending", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
