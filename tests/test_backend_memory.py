"""The memory backend in this process: ids, history retention (TTL), what it refuses to record."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from django.test import AsyncRequestFactory

from stream_app import protocol
from stream_app.backends import get_backend, reset_backend
from stream_app.channels import get_channel, subscribe
from stream_app.sessions import Session

factory = AsyncRequestFactory()


@pytest.fixture(autouse=True)
def fresh_backend() -> Iterator[None]:
    reset_backend()
    yield
    reset_backend()


def make_session(**headers: str) -> Session:
    request = factory.get("/sse/", headers=headers)
    return Session(request, retry=None, keep_alive=None, state={})


def received(session: Session) -> list[protocol.Event]:
    return protocol.decode(b"".join(session._queue))


@pytest.mark.parametrize(
    "last_id",
    [
        "99999999999999999999999-0",
        "1-99999999999999999999999",
        "18446744073709551616-0",
        "\u00b2-1",
    ],
)
async def test_memory_out_of_range_or_non_ascii_id_is_invalid_id_without_traceback(
    last_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = get_channel("range")
    await channel.abroadcast("before")
    session = make_session(**{"Last-Event-ID": last_id})
    with caplog.at_level(logging.DEBUG, logger="stream_app"):
        await subscribe(session, [channel])
    live = await channel.abroadcast("live")
    events = received(session)
    assert events[0].event == "reset"
    assert json.loads(events[0].data or "")["reason"] == "invalid_id"
    assert [(e.data, e.id) for e in events[1:]] == [("live", live)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_memory_valid_id_takes_ascii_digits_up_to_64_bits() -> None:
    backend = get_backend()
    assert backend.valid_id(f"{2**64 - 1}-{2**64 - 1}")
    for bad in (f"{2**64}-0", "\u0661-1", "1-\u00b2", "1", "-1", "1-", "a-1"):
        assert not backend.valid_id(bad), bad
