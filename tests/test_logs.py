"""Structured log lines: the key=value format, and connect/disconnect lines from a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

import pytest

from stream_app import logs
from stream_app.sessions import Session
from stream_app.testing import EventStream
from tests.conftest import Server

FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line: str) -> dict[str, str]:
    """Parse one key=value line (quoted values are JSON strings)."""
    return {
        key: json.loads(value) if value.startswith('"') else value
        for key, value in FIELD.findall(line)
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("alpha", "k=alpha"),
        (42, "k=42"),
        ("two words", 'k="two words"'),
        ('say "hi"', 'k="say \\"hi\\""'),
        ("a=b", 'k="a=b"'),
        ("line\nbreak", 'k="line\\nbreak"'),
        ("", 'k=""'),
        (None, ""),
    ],
)
def test_format_fields_quotes_values_that_need_it(value: object, text: str) -> None:
    assert logs.format_fields(k=value) == text


def test_format_fields_round_trip_through_a_parser() -> None:
    line = logs.format_fields(a="x y", b='q"=\\', c=3)
    assert fields(line) == {"a": "x y", "b": 'q"=\\', "c": "3"}


def test_logs_receivers_with_info_disabled_record_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = Session(None)
    caplog.set_level(logging.WARNING, logger="stream_app")
    logs._on_connect(Session, session=session)
    logs._on_disconnect(Session, session=session, reason="closed")
    assert caplog.records == []
    assert session not in logs._open
    caplog.set_level(logging.INFO, logger="stream_app")
    logs._on_connect(Session, session=session)
    assert session in logs._open
    logs._on_disconnect(Session, session=session, reason="closed")
    assert [r.getMessage().split()[0] for r in caplog.records] == [
        "event=session_connect",
        "event=session_disconnect",
    ]
    assert session not in logs._open


@pytest.mark.slow
async def test_logs_connect_and_disconnect_lines_from_a_real_server(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory("daphne")
    stream = await EventStream(
        f"{server.url}/sse/?channel=alpha&channel=beta",
        headers={"X-Forwarded-For": "203.0.113.7", "Last-Event-ID": "1-2"},
    ).open()
    try:
        while (await stream.next_event()).event != "ready":
            pass
        await asyncio.sleep(0.3)
    finally:
        await stream.close()
    deadline = time.monotonic() + 5
    while "event=session_disconnect" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        await asyncio.sleep(0.05)
    lines = server.log.read_text().splitlines()
    connect = fields(next(line for line in lines if "event=session_connect" in line))
    disconnect = fields(next(line for line in lines if "event=session_disconnect" in line))
    assert connect["channels"] == disconnect["channels"] == "alpha,beta,news"
    assert connect["session"] == disconnect["session"]
    assert connect["path"] == "/sse/"
    assert connect["remote"] == "127.0.0.1"
    assert connect["forwarded_for"] == "203.0.113.7"
    assert connect["last_event_id"] == "1-2"
    assert connect["open"] == "1"
    assert disconnect["reason"] == "disconnect"
    assert disconnect["open"] == "0"
    assert 0.3 <= float(disconnect["duration_s"]) < 10
