"""Server processes (pinned to core 0), a private Redis, the fake LLM upstream, and what /proc
says about them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import HOST, http_json

__all__ = [
    "CLIENT_CORE",
    "ROOT",
    "SERVER_CORE",
    "Proc",
    "busy_seconds",
    "cpu_seconds",
    "free_port",
    "raise_nofile",
    "rss_kb",
    "start_redis",
    "start_server",
    "start_upstream",
    "threads",
]

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
CLIENT_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
# granian admits at most this many concurrent requests per worker (default: backlog/workers,
# 1024 here), and an SSE stream is a request that never ends.
GRANIAN_BACKPRESSURE = 20_000
BACKLOG = 4096


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    """Raise this process's open-file limit to the hard limit (10,000 sockets need it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian runs its workers as child processes)."""
    found = [pid]
    for index in range(1000):  # bounded walk
        if index >= len(found):
            break
        try:
            tasks = os.listdir(f"/proc/{found[index]}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{found[index]}/task/{task}/children").read_text()
            except FileNotFoundError:
                continue
            found.extend(int(child) for child in children.split())
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        # Fields after the ")" closing the command name; utime and stime are fields 14 and 15.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def busy_seconds(cores: tuple[int, ...] = (SERVER_CORE, CLIENT_CORE)) -> float:
    """CPU time spent busy on ``cores`` by anything (from /proc/stat)."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            # user nice system idle iowait irq softirq steal: all but idle and iowait.
            values = [int(v) for v in fields[:8]]
            total += sum(values) - values[3] - values[4]
    return total / CLK_TCK


def rss_kb(pids: list[int]) -> int:
    """Resident memory of ``pids`` in KiB (VmRSS from /proc/<pid>/status)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total


def threads(pids: list[int]) -> int:
    """OS threads of ``pids``."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            continue
    return total


@dataclass
class Proc:
    """A process started by the benchmark; ``stop()`` ends it and every descendant by PID."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path
    pids: list[int] = field(default_factory=list)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the process's output and where the rest is, for error messages."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            text = []
        return " | ".join([*text[-lines:], f"log: {self.log}"])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; descendants left behind are killed by PID."""
        known = set(_tree(self.popen.pid)) | set(self.pids)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pid in known - {self.popen.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command]


def _spawn(name: str, command: list[str], env: dict[str, str], log_dir: Path, port: int) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{port}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=raise_nofile,
        )
    return Proc(name, port, popen, log)


def server_command(kind: str, app: str, port: int) -> list[str]:
    """The command line of ``kind`` (uvicorn, daphne, granian) serving ``app`` on ``port``."""
    python = sys.executable
    if kind == "uvicorn":
        return [
            python, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--lifespan", "auto", "--backlog", str(BACKLOG),
            "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
    if kind == "daphne":
        endpoint = f"tcp:port={port}:interface={HOST}:backlog={BACKLOG}"
        return [python, "-m", "daphne", "-e", endpoint, "-v", "0", app]
    if kind == "granian":
        return [
            python, "-m", "granian", "--interface", "asgi", "--host", HOST,
            "--port", str(port), "--workers", "1", "--loop", "uvloop", "--no-ws",
            "--backlog", str(BACKLOG), "--backpressure", str(GRANIAN_BACKPRESSURE),
            "--log-level", "warning", app,
        ]  # fmt: skip
    raise ValueError(f"unknown server {kind!r}")


async def start_server(
    kind: str, app: str, env: dict[str, str], ready_path: str, log_dir: Path
) -> Proc:
    """Start a server on core 0 and wait until ``ready_path`` answers JSON (30 s at most)."""
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "bench.benchproject.settings",
        **env,
    }
    proc = _spawn(
        kind, _pinned(SERVER_CORE, server_command(kind, app, port)), full_env, log_dir, port
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if not proc.alive():
                raise RuntimeError(f"{kind} exited with {proc.popen.returncode}: {proc.log_tail()}")
            try:
                await http_json(port, "GET", ready_path, timeout=2)
                break
            except (OSError, TimeoutError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start: {proc.log_tail()}") from None
                await asyncio.sleep(0.1)
        proc.pids = _tree(proc.popen.pid)
    except BaseException:
        proc.stop()
        raise
    return proc


async def start_redis(log_dir: Path) -> Proc:
    """A private redis-server (no persistence) on core 1, away from the servers under test."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    command = [
        binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--daemonize", "no",
    ]  # fmt: skip
    proc = _spawn("redis", _pinned(CLIENT_CORE, command), dict(os.environ), log_dir, port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(b"PING\r\n")
                reply = await asyncio.wait_for(reader.readline(), 2)
                writer.close()
                if reply.startswith(b"+PONG"):
                    break
            except (OSError, TimeoutError):
                pass
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"redis-server did not start: {proc.log_tail()}")
            await asyncio.sleep(0.05)
        proc.pids = [proc.popen.pid]
    except BaseException:
        proc.stop()
        raise
    return proc


async def start_upstream(log_dir: Path) -> Proc:
    """The fake OpenAI upstream (``tests.fake_openai``) on core 1, beside the load generator.

    It shares the client's core so that the server under test keeps core 0 to itself; direct
    and through-our-server figures are taken with the same arrangement.
    """
    port = free_port()
    command = [sys.executable, "-m", "tests.fake_openai", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = _spawn("fake-openai", _pinned(CLIENT_CORE, command), env, log_dir, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if not proc.alive():
                raise RuntimeError(f"fake upstream exited: {proc.log_tail()}")
            try:
                # An empty body is a non-streamed request: answered with one JSON completion.
                await http_json(port, "POST", "/v1/chat/completions", timeout=2)
                break
            except (OSError, TimeoutError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fake upstream did not start: {proc.log_tail()}") from None
                await asyncio.sleep(0.1)
        proc.pids = [proc.popen.pid]
    except BaseException:
        proc.stop()
        raise
    return proc
