"""Fixtures: real server processes (daphne, uvicorn), a private Redis, the shared test DB."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from tests.wheels import build_wheel

ROOT = Path(__file__).resolve().parent.parent
# The browser tests' Chromium (apt-get install chromium), started by Playwright.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOG_DIR = Path(os.environ.get("STREAM_TEST_OUTPUT", tempfile.gettempdir())) / "stream_app_logs"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    """Wait until something accepts on ``port``; fail with the log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"server on port {port} did not start:\n{log.read_text()[-3000:]}")


@dataclass
class Server:
    """A server process started by a test."""

    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Signal the process and wait for it; SIGKILL if it does not exit in time.

        Teardowns use the default SIGTERM: a server that exits on its own writes its coverage
        data (``[tool.coverage.run] sigterm``); SIGKILL is for tests about a crashed worker."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_server(kind: str, env: dict[str, str] | None = None, port: int | None = None) -> Server:
    """Start daphne or uvicorn serving tests.asgi on a free loopback port."""
    port = port or free_port()
    app = "tests.asgi:application"
    commands = {
        "daphne": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
        "uvicorn": [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            # Django's own handler refuses the lifespan protocol; ours speaks it.
            "--lifespan",
            "auto" if (env or {}).get("STREAM_PLAIN_DJANGO") else "on",
            "--timeout-graceful-shutdown",
            "5",
            app,
        ],
    }
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"],
        **(env or {}),
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{kind}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            commands[kind], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(kind, port, proc, log, env or {})
    wait_for_port(port, proc, log)
    return server


@pytest.fixture(scope="session", autouse=True)
def serving_process() -> None:
    """This process serves the streams its tests open in it (sessions, ASGI test requests), so
    memory-backend publishes here are received, as in a worker, whatever the test order.
    Separate processes (``manage.py``, ``python -c``) start without it, like a cron job."""
    from stream_app.backends.memory import mark_serving

    mark_serving()


@pytest.fixture
def server_factory(django_db_setup: None) -> Iterator[object]:
    """Start servers on demand; each is stopped at teardown."""
    started: list[Server] = []

    def factory(kind: str = "daphne", env: dict[str, str] | None = None, **kw: int) -> Server:
        server = start_server(kind, env, **kw)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def daphne_server(django_db_setup: None) -> Iterator[Server]:
    """A daphne server with the memory backend, shared by the session."""
    server = start_server("daphne", {"STREAM_KEEP_ALIVE": "0.3"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def uvicorn_server(django_db_setup: None) -> Iterator[Server]:
    """A uvicorn server with the memory backend, shared by the session."""
    server = start_server("uvicorn", {"STREAM_KEEP_ALIVE": "0.3"})
    yield server
    server.stop()


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each test runs against daphne and against uvicorn."""
    return request.getfixturevalue(f"{request.param}_server")


@dataclass
class RedisServer:
    """A private redis-server on a free port (so tests can stop and restart it)."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL for STREAM_APP["REDIS_URL"]."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server; waits until it accepts connections."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        """Stop the server (its data is gone: it keeps nothing on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """Kill -9 the server: clients see their connections refused, with no goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private Redis for the whole test session."""
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, that it may kill and restart (the session's is shared)."""
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_env(redis_server: RedisServer) -> dict[str, str]:
    """Environment for servers on the Redis backend, with a key prefix of their own."""
    if redis_server.proc is None:
        redis_server.start()
    prefix = f"t{os.getpid()}x{time.monotonic_ns()}"
    return {"STREAM_BACKEND": "redis", "REDIS_URL": redis_server.url, "STREAM_KEY_PREFIX": prefix}


async def fetch_json(url: str, **kwargs: object) -> Any:
    """GET a JSON endpoint of a test server."""
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url, **kwargs)).json()  # type: ignore[arg-type]


def rss_kb(pid: int) -> int:
    """Resident memory of a process, in KiB (from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS")))


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, built once per test session (``tests/wheels.py``)."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))
