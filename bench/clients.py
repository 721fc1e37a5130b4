"""The two profiles (the projects served), their applications' endpoints, and who the clients
are: anonymous or logged in (a session cookie), each behind its own address.

``realistic`` (the default): ``bench.benchproject.realistic``, a migrated SQLite file seeded by
``bench.seed`` and copied fresh for every run; clients subscribe to ``notifications`` (one of
``NOTIFICATION_CHANNELS``), every odd-numbered client sends a logged-in session's cookie and
also subscribes to its ``user:<pk>`` channel, and each sends ``X-Forwarded-For: 10.x.y.z``.
``lean``: the stripped-down project of earlier runs (``bench.benchproject.settings``), anonymous
clients without cookies on ``bench``, no database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import get_request

__all__ = ["APPS", "PROFILES", "App", "Clients", "Database", "Profile", "app_for"]


@dataclass(frozen=True)
class Profile:
    """A project the servers run: its settings, the channel clients subscribe to, whether it
    has a database to seed and logged-in clients."""

    name: str
    settings: str
    channel: str
    seeded: bool


PROFILES = {
    "realistic": Profile("realistic", "bench.benchproject.realistic", "notifications", True),
    "lean": Profile("lean", "bench.benchproject.settings", "bench", False),
}


@dataclass(frozen=True)
class App:
    """An ASGI application under test and its endpoints."""

    name: str
    target: str
    listen: str
    broadcast: str
    tokens: str
    stats: str
    publish: str = ""
    #: Whether a logged-in client's listener also subscribes to its ``user:<pk>`` channel.
    per_user: bool = False


def _ours(name: str, target: str, channel: str) -> App:
    return App(
        name,
        target,
        f"/sse/?channel={channel}",
        "/bench/broadcast/",
        "/bench/tokens/",
        "/bench/stats/",
        "/bench/publish/",
        per_user=True,
    )


APPS = ("raw", "django", "ours", "ours-djasgi")


def app_for(name: str, profile: Profile) -> App:
    """Application ``name`` (one of ``APPS``) in ``profile``'s project."""
    if name == "raw":
        return App("raw", "bench.raw_asgi:app", "/sse", "/broadcast", "/tokens", "/stats")
    if name == "django":
        return App(
            "django",
            "bench.benchproject.asgi_django:application",
            "/plain/sse/",
            "/plain/broadcast/",
            "/plain/tokens/",
            "/plain/stats/",
        )
    if name == "ours":
        # The project's /sse/ endpoint, served by stream_app's hand-off handler.
        return _ours(name, "bench.benchproject.asgi:application", profile.channel)
    if name == "ours-djasgi":
        # Ours under Django's own handler, which holds one thread per open stream.
        return _ours(name, "bench.benchproject.asgi_django:application", profile.channel)
    raise ValueError(f"unknown app {name!r}")


@dataclass
class Clients:
    """The load generator's clients: client ``index`` is logged in when odd (and identities
    exist), anonymous otherwise; each has its own forwarded address."""

    identities: list[tuple[str, int]] = field(default_factory=list)

    def identity(self, index: int) -> tuple[str, int] | None:
        """(session key, user pk) of client ``index``, or None for an anonymous client."""
        if not self.identities or index % 2 == 0:
            return None
        return self.identities[(index // 2) % len(self.identities)]

    def request(
        self, path: str, port: int, index: int, last_event_id: str | None = None, user: bool = False
    ) -> bytes:
        """Client ``index``'s GET of ``path``; ``user``: add its ``user:<pk>`` channel."""
        headers = f"X-Forwarded-For: 10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}\r\n"
        found = self.identity(index)
        if found is not None:
            headers += f"Cookie: sessionid={found[0]}\r\n"
            if user:
                path += f"&channel=user:{found[1]}"
        if last_event_id is not None:
            headers += f"Last-Event-ID: {last_event_id}\r\n"
        return get_request(path, port, headers)


class Database:
    """The realistic profile's seeded SQLite file: made once, copied fresh for every run."""

    def __init__(self, sessions: int, log_dir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-db-"))
        self.template = self.dir / "seeded.sqlite3"
        ids = self.dir / "identities.json"
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "DJANGO_SETTINGS_MODULE": PROFILES["realistic"].settings,
            "BENCH_DB_PATH": str(self.template),
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        with (log_dir / "seed.log").open("wb") as log:
            done = subprocess.run(
                [sys.executable, "-m", "bench.seed", "--sessions", str(sessions), "--out", ids],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if done.returncode:
            raise RuntimeError(f"bench.seed failed ({done.returncode}): see {log_dir / 'seed.log'}")
        self.clients = Clients([(key, pk) for key, pk in json.loads(ids.read_text())])
        self._copies = 0

    def fresh_copy(self) -> Path:
        """A new copy of the seeded file, for one run."""
        self._copies += 1
        path = self.dir / f"run{self._copies}.sqlite3"
        shutil.copyfile(self.template, path)
        return path

    def remove(self) -> None:
        """Delete the files."""
        shutil.rmtree(self.dir, ignore_errors=True)
