"""The backend contract's defaults (``stream_app.backends.base.Backend``): what a backend that
implements only publishing promises, as the Channels backend does for leases and presence."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.backends.base import Backend, History, Message
from stream_app.backends.channels import ChannelsBackend


async def test_a_backend_must_implement_publishing() -> None:
    backend = Backend()
    with pytest.raises(NotImplementedError):
        await backend.publish(Message("news", "x"))
    with pytest.raises(NotImplementedError):
        backend.publish_sync(Message("news", "x"))
    # Nothing retained: a resuming client gets a reset, never a silent gap.
    assert await backend.history(["news"], "1-1") == History([], False)
    assert await backend.ready("news", 0.1)
    assert await backend.ping()


async def test_without_leases_nothing_is_taken_over_and_nobody_loses_a_lease() -> None:
    """A backend that keeps no leases (the Channels backend: a layer stores no keys)."""
    backend = ChannelsBackend()
    assert await backend.lease_start("generation:1", {"request": {}}, 5) is False
    assert await backend.lease_state("generation:1") is None
    # "Alive": no worker ever tries to take a generation over...
    assert await backend.lease_alive("generation:1") is True
    assert await backend.lease_claim("generation:1", 5) is False
    # ...and the producer is never told it lost what it never held.
    assert await backend.lease_renew("generation:1", 5) is True
    assert await backend.lease_reclaim("generation:1", 5) is True


async def test_presence_defaults_to_this_process_sessions() -> None:
    backend = Backend()

    def count_local(channel: str, filter: Any) -> int:
        return 1 if channel == "watched" else 0

    backend.count_local = count_local
    assert await backend.count("watched", None) == 1
    assert await backend.has_presence("watched")
    assert not await backend.has_presence("nobody")


def test_a_callable_filter_cannot_cross_a_process() -> None:
    with pytest.raises(TypeError, match="callable filter cannot cross a process"):
        Message("news", "x", None, lambda state: True).dumps()
