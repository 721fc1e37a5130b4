"""The health endpoint when the backend's store answers wrongly or not at all (in process)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from stream_app.backends import reset_backend

REDIS_BACKEND = "stream_app.backends.redis.RedisBackend"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def fresh_backend() -> Iterator[None]:
    reset_backend()
    yield
    reset_backend()


@pytest.mark.usefixtures("fresh_backend")
async def test_health_with_a_silent_redis_answers_503_timeout(
    silent_port: int, settings: Any, async_client: Any
) -> None:
    settings.STREAM_APP = {
        **settings.STREAM_APP,
        "BACKEND": REDIS_BACKEND,
        "REDIS_URL": f"redis://127.0.0.1:{silent_port}/0",
        "HEALTH_TIMEOUT": 0.3,
    }
    response = await asyncio.wait_for(async_client.get("/stream/health/"), 10)
    assert response.status_code == 503
    assert response.json()["reason"] == "backend_timeout"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.usefixtures("fresh_backend")
async def test_health_with_something_else_than_redis_answers_503_without_secrets(
    settings: Any, async_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def not_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_redis, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings.STREAM_APP = {
        **settings.STREAM_APP,
        "BACKEND": REDIS_BACKEND,
        "REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{port}/0",
        "HEALTH_TIMEOUT": 5,
    }
    with caplog.at_level(logging.DEBUG, logger="stream_app"):
        async with server:
            response = await asyncio.wait_for(async_client.get("/stream/health/"), 10)
    assert response.status_code == 503
    # redis-py's ping fails on the reply it cannot parse: the store does not answer as Redis.
    assert response.json()["reason"] == "backend_unreachable"
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in response.content.decode()
