"""The deployment topology of docker-compose.yml, run with real processes on loopback.

A private Redis, two uvicorn workers started with the commands written in docker-compose.yml
(the ``command`` of each app service), and Debian's nginx running deploy/nginx.conf with only
its marked lines rewritten to loopback ports and a temporary directory. Streams go through nginx
over HTTP/1.1 and over HTTP/2 with TLS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.conf import settings

from stream_app.conf import DEFAULTS
from stream_app.testing import EventStream
from tests.conftest import LOG_DIR, ROOT, RedisServer, Server, free_port, wait_for_port
from tests.test_metrics import Samples, open_stream, publish, scrape

COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
MARK = "(test: rewritten)"

# -- docker-compose.yml ------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys as docker compose does (PyYAML keeps the
    last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {duplicates}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def load_compose(text: str) -> Any:
    """Parse a compose file's YAML."""
    return yaml.load(text, Loader=ComposeLoader)


def compose_file() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    data: dict[str, Any] = load_compose(COMPOSE.read_text())
    return data


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run an ASGI server on the project."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "project.asgi:application" in (service.get("command") or [])
    }


def test_compose_file_defines_redis_two_workers_and_nginx() -> None:
    compose = compose_file()
    services = compose["services"]
    workers = app_services(compose)
    assert {"redis", "nginx"} <= set(services)
    assert len(workers) >= 2
    for name, worker in workers.items():
        command = worker["command"]
        # uvicorn: its writes wait for the peer, so a client that stops reading is dropped
        # (WRITE_TIMEOUT); daphne buffers every write (tests/test_stalled_clients.py).
        assert command[:2] == ["uvicorn", "project.asgi:application"], name
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--port") + 1] == "8000"
        # The lifespan lets stream_app end streams gracefully on SIGTERM.
        assert command[command.index("--lifespan") + 1] == "on"
        assert "--timeout-graceful-shutdown" in command
        # Behind nginx: the client's address and scheme come from its X-Forwarded-* headers.
        assert "--proxy-headers" in command
        assert command[command.index("--forwarded-allow-ips") + 1] == "*"
        env = worker["environment"]
        assert env["STREAM_BACKEND"] == "redis"
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DJANGO_DEBUG"] == "0"
        assert env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
        assert env["DJANGO_ALLOWED_HOSTS"]
        assert env["DJANGO_DB_PATH"].startswith("/data/")
        assert "data:/data" in worker["volumes"]
        assert worker["build"] == "."
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/stream/health/" in " ".join(worker["healthcheck"]["test"])
    # Every worker runs the same code and settings.
    first, *others = workers.values()
    for other in others:
        assert other["environment"] == first["environment"]
        assert other["command"] == first["command"]
    nginx = services["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert any(v.endswith(":/etc/nginx/certs:ro") for v in nginx["volumes"])
    assert {p.split(":")[1] for p in nginx["ports"]} == {"80", "443"}
    assert set(nginx["depends_on"]) == set(workers)
    # References resolve: dependencies, named volumes, the Dockerfile.
    for service in services.values():
        assert set(service.get("depends_on") or {}) <= set(services)
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in compose["volumes"]
    assert (ROOT / "Dockerfile").read_text().startswith("# ")
    assert "FROM python:3.11-slim" in (ROOT / "Dockerfile").read_text()


def dockerfile_command() -> list[str]:
    """The ``CMD`` of the Dockerfile (exec form: a JSON list)."""
    lines = [x for x in (ROOT / "Dockerfile").read_text().splitlines() if x.startswith("CMD ")]
    assert len(lines) == 1, lines
    command: list[str] = json.loads(lines[0].removeprefix("CMD "))
    return command


def test_dockerfile_runs_uvicorn_with_the_lifespan() -> None:
    command = dockerfile_command()
    assert command[:2] == ["uvicorn", "project.asgi:application"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8000"
    assert command[command.index("--lifespan") + 1] == "on"
    assert "--proxy-headers" in command
    # The image trusts forwarded headers from no one but localhost unless told (compose: "*").
    assert "--forwarded-allow-ips" not in command
    # The image installs the server it runs.
    assert "server" in dockerfile_extras()


def dockerfile_extras() -> set[str]:
    """The extras of the package the Dockerfile installs (``pip install ".[a,b]"``)."""
    (extras,) = re.findall(r"pip install \"?\.\[([^\]]*)\]", (ROOT / "Dockerfile").read_text())
    return set(extras.split(","))


def test_dockerfile_installs_the_extra_of_the_backend_compose_selects() -> None:
    # The core install has no Redis client: a worker on STREAM_BACKEND=redis needs the extra.
    backends = {s["environment"]["STREAM_BACKEND"] for s in app_services(compose_file()).values()}
    assert backends == {"redis"}
    assert backends <= dockerfile_extras()


def test_compose_file_upstreams_match_nginx_conf() -> None:
    workers = app_services(compose_file())
    upstreams = re.findall(r"^\s*server (\S+):(\d+);", NGINX_CONF.read_text(), re.M)
    assert sorted(upstreams) == sorted((name, "8000") for name in workers)


def test_compose_file_passes_docker_compose_config_where_docker_compose_exists() -> None:
    # Where the docker CLI has the compose plugin (not on the CI machines: no Docker engine
    # runs there), compose itself validates the file; the structural tests run everywhere.
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:  # fmt: skip
        pytest.skip("no docker compose here: the structural tests cover the file")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SECRET_KEY": "x"},
    )
    assert result.returncode == 0, result.stderr


def test_compose_loader_refuses_duplicate_keys() -> None:
    assert load_compose('a:\n  b: "1"\n  c:\n    - x  # note\n    - "y"\n') == {
        "a": {"b": "1", "c": ["x", "y"]}
    }
    with pytest.raises(yaml.constructor.ConstructorError, match=r"duplicate keys \['a'\]"):
        load_compose("a: 1\na: 2\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate keys"):
        load_compose("s:\n  x:\n    image: a\n  x:\n    image: b\n")


# -- deploy/nginx.conf -------------------------------------------------------------------------


def directives(text: str) -> list[str]:
    """The directives of an nginx config, comments removed, one per entry."""
    return [
        line.split("#")[0].strip()
        for line in text.splitlines()
        if line.split("#")[0].strip() and not line.strip().startswith("#")
    ]


def test_nginx_conf_has_the_sse_proxy_settings() -> None:
    found = directives(NGINX_CONF.read_text())
    for directive in (
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_cache off;",
        "gzip off;",
        "least_conn;",
        "listen 443 ssl http2;",
        "listen 80;",
    ):
        assert directive in found, directive
    # X-Accel-Buffering from the app must be honoured, never ignored.
    assert not [d for d in found if d.startswith("proxy_ignore_headers")]
    timeout = next(d for d in found if d.startswith("proxy_read_timeout"))
    seconds = int(re.fullmatch(r"proxy_read_timeout (\d+)s;", timeout).group(1))  # type: ignore[union-attr]
    assert seconds > 2 * DEFAULTS["KEEP_ALIVE"]
    assert seconds > 2 * settings.STREAM_APP["KEEP_ALIVE"]
    size = next(d for d in found if d.startswith("client_max_body_size"))
    assert int(size.split()[1].rstrip("m;")) * 1_000_000 > DEFAULTS["MAX_MESSAGE_BYTES"]


@dataclass
class Nginx:
    """An nginx master process started by a test, with its prefix directory."""

    proc: subprocess.Popen[bytes]
    http_port: int
    https_port: int
    prefix: Path

    @property
    def url(self) -> str:
        """Plain HTTP base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        """TLS (HTTP/2) base URL."""
        return f"https://127.0.0.1:{self.https_port}"

    def access_log(self) -> list[str]:
        """Lines of the access log so far."""
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: the master stops its workers), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def render_nginx_conf(
    prefix: Path,
    upstreams: list[int],
    http_port: int,
    https_port: int,
    certs: Path,
    edits: dict[str, str] | None = None,
) -> str:
    """deploy/nginx.conf with its marked lines pointed at loopback and ``prefix``.

    Every marked line must be rewritten and every rewrite must match exactly one place, so a
    change to the deployed file that this test would not exercise fails here.
    """
    text = NGINX_CONF.read_text()
    user = "root" if os.geteuid() == 0 else None
    temp = "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    rewrites = {
        "user nginx;": f"user {user};" if user else "",
        "error_log /var/log/nginx/error.log notice;": f"error_log {prefix}/error.log notice;",
        "pid /var/run/nginx.pid;": f"pid {prefix}/nginx.pid;",
        "access_log /var/log/nginx/access.log stream;": f"access_log {prefix}/access.log stream;",
        "server app1:8000;": f"server 127.0.0.1:{upstreams[0]};",
        "server app2:8000;": f"server 127.0.0.1:{upstreams[1]};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "ssl_certificate /etc/nginx/certs/fullchain.pem;": (
            f"ssl_certificate {certs}/fullchain.pem;"
        ),
        "ssl_certificate_key /etc/nginx/certs/privkey.pem;": (
            f"ssl_certificate_key {certs}/privkey.pem;"
        ),
    }
    marked = [
        line.strip().split(";")[0] + ";"
        for line in text.splitlines()
        if MARK in line and not line.lstrip().startswith("#")
    ]
    assert sorted(marked) == sorted(rewrites), "marked lines and rewrites disagree"
    for old, new in {**rewrites, **(edits or {}), "http {": "http {\n" + temp}.items():
        assert text.count(old) == 1, f"{old!r} is not in deploy/nginx.conf exactly once"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for 127.0.0.1, made as deploy/README.md says."""
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(directory / "privkey.pem"), "-out", str(directory / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return directory


def start_worker(command: list[str], env: dict[str, str]) -> Server:
    """Run a compose worker command on loopback, serving the test project."""
    port = free_port()
    program, *args = command
    local = {"0.0.0.0": "127.0.0.1", "8000": str(port)}
    args = [local.get(arg, arg) for arg in args]
    args = [a.replace("project.asgi:", "tests.asgi:") for a in args]
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"],
        **env,
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"deploy-{program}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", program, *args],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(program, port, proc, log, env)
    wait_for_port(port, proc, log)
    return server


@pytest.fixture(scope="module")
def workers(django_db_setup: None, redis_server: RedisServer) -> Iterator[list[Server]]:
    """The app services, each with the command docker-compose.yml gives it, on one Redis."""
    compose = compose_file()
    if redis_server.proc is None:
        redis_server.start()
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": redis_server.url,
        "STREAM_KEY_PREFIX": f"deploy{os.getpid()}x{time.monotonic_ns()}",
        # A short queue, so that a stuck client is closed after a few MB, and a short history
        # (the backpressure test publishes 30 MB).
        "STREAM_APP_JSON": '{"MAX_QUEUE": 16, "HISTORY_SIZE": 100}',
    }
    started: list[Server] = []
    try:
        for service in app_services(compose).values():
            started.append(start_worker(service["command"], env))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def nginx_factory(
    workers: list[Server], certs: Path, tmp_path: Path
) -> Iterator[Callable[..., Nginx]]:
    """Start nginx on deploy/nginx.conf (optionally edited); each is stopped at teardown."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is not installed (apt-get install nginx-light)")
    started: list[Nginx] = []

    def factory(edits: dict[str, str] | None = None) -> Nginx:
        prefix = tmp_path / f"nginx{len(started)}"
        prefix.mkdir()
        http_port, https_port = free_port(), free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                prefix, [w.port for w in workers], http_port, https_port, certs, edits
            )
        )
        log = prefix / "stderr.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Nginx(proc, http_port, https_port, prefix)
        started.append(server)
        wait_for_port(http_port, proc, log)
        wait_for_port(https_port, proc, log)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
async def nginx(nginx_factory: Callable[..., Nginx], workers: list[Server]) -> Nginx:
    """nginx running deploy/nginx.conf as deployed, once no stream of an earlier test is open."""
    for worker in workers:
        await wait_for(worker, lambda s: s.value("stream_sessions_open") == 0)
    return nginx_factory()


async def wait_for(worker: Server, check: Callable[[Samples], bool], timeout: float = 10) -> None:
    """Scrape one worker directly until ``check`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not check(samples := await scrape(worker.url)):
        if time.monotonic() > deadline:
            pytest.fail(f"{worker.kind} metrics never satisfied the check: {dict(samples)}")
        await asyncio.sleep(0.05)


def on_channel(channel: str, count: int) -> Callable[[Samples], bool]:
    """A check: ``count`` sessions on ``channel``."""
    return lambda s: s.value("stream_channel_sessions", channel=channel) == count


async def one_stream_per_worker(
    base_url: str, workers: list[Server], channel: str, **headers: str
) -> list[EventStream]:
    """Open two streams through nginx and check that it sent one to each worker."""
    streams = [await open_stream(base_url, f"channel={channel}", **headers) for _ in workers]
    for worker in workers:
        await wait_for(worker, on_channel(channel, 1))
    return streams


# -- the topology, through nginx ---------------------------------------------------------------


@pytest.mark.slow
async def test_nginx_sends_streams_to_both_workers(nginx: Nginx, workers: list[Server]) -> None:
    streams = await one_stream_per_worker(nginx.url, workers, "alpha")
    try:
        for stream in streams:
            assert stream.response is not None
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            assert "content-length" not in stream.response.headers
            assert stream.response.http_version == "HTTP/1.1"
    finally:
        for stream in streams:
            await stream.close()
    for worker in workers:
        await wait_for(worker, on_channel("alpha", 0))


@pytest.mark.slow
async def test_nginx_broadcast_reaches_clients_on_both_workers(
    nginx: Nginx, workers: list[Server]
) -> None:
    streams = await one_stream_per_worker(nginx.url, workers, "alpha")
    try:
        response = await publish(nginx.url, "alpha", {"to": "all"})
        assert response.status_code == 201, response.text
        sent = response.json()["id"]
        for stream in streams:
            event = await stream.next_event(5)
            assert (event.data, event.id) == ('{"to":"all"}', sent)
    finally:
        for stream in streams:
            await stream.close()


async def arrival_times(nginx: Nginx, streams: list[EventStream], count: int) -> list[float]:
    """Publish ``count`` events through nginx; seconds from each POST to its arrival, per
    stream (a missing event counts as infinitely late)."""
    delays = []
    for i in range(count):
        started = time.perf_counter()
        assert (await publish(nginx.url, "beta", i)).status_code == 201
        for stream in streams:
            try:
                event = await stream.next_event(1.0)
            except TimeoutError:
                delays.append(float("inf"))
                continue
            assert event.data == str(i)
            delays.append(time.perf_counter() - started)
    return delays


@pytest.mark.slow
async def test_nginx_passes_events_on_within_200ms(nginx: Nginx, workers: list[Server]) -> None:
    streams = await one_stream_per_worker(nginx.url, workers, "beta")
    try:
        delays = await arrival_times(nginx, streams, 5)
    finally:
        for stream in streams:
            await stream.close()
    delays.sort()
    # The median event is prompt; even the slowest (a busy shared machine) is not held back.
    assert delays[len(delays) // 2] < 0.2, delays
    assert delays[-1] < 1.0, delays


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edits", "closed"),
    [
        pytest.param({}, True, id="deployed"),
        # The control: nginx buffering the stream (and ignoring the app's header) spools what a
        # stuck client does not read to disk, so the worker never sees it fall behind.
        pytest.param(
            {"proxy_buffering off;": "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;"},
            False,
            id="buffered-control",
        ),
    ],
)
async def test_nginx_lets_a_worker_close_a_client_that_stopped_reading(
    nginx_factory: Callable[..., Nginx],
    workers: list[Server],
    edits: dict[str, str],
    closed: bool,
) -> None:
    for worker in workers:
        await wait_for(worker, lambda s: s.value("stream_sessions_open") == 0)
    nginx = nginx_factory(edits)
    # One stuck client per worker; a worker's send waits for nginx, which waits for the client
    # (proxy_buffering off), so each session feels backpressure and is closed as slow.

    async def slow_consumers() -> float:
        return sum([(await scrape(w.url)).value("stream_slow_consumers_total") for w in workers])

    stuck = await one_stream_per_worker(nginx.url, workers, "beta")
    try:
        before = now = await slow_consumers()
        payload = "x" * 200_000
        for i in range(150):  # 30 MB: far more than the socket buffers on the way
            assert (await publish(nginx.url, "beta", payload)).status_code == 201
            if i % 10 == 9:
                now = await slow_consumers()
                if now >= before + len(workers):
                    break
        assert now - before == (len(workers) if closed else 0)
    finally:
        for stream in stuck:
            await stream.close()


@pytest.mark.slow
async def test_nginx_resumes_with_last_event_id_on_either_worker(
    nginx: Nginx, workers: list[Server]
) -> None:
    first = await open_stream(nginx.url, "channel=alpha")
    mark = (await publish(nginx.url, "alpha", "mark")).json()["id"]
    assert (await first.next_event(5)).id == mark
    await first.close()
    for worker in workers:
        await wait_for(worker, on_channel("alpha", 0))
    missed = [(await publish(nginx.url, "alpha", i)).json()["id"] for i in range(5)]
    # Two clients resume at once: nginx sends one to each worker; both replay exactly.
    resumed = [
        await EventStream(f"{nginx.url}/sse/?channel=alpha", headers={"Last-Event-ID": mark}).open()
        for _ in workers
    ]
    try:
        for stream in resumed:
            events = await stream.events(6, 5)
            assert [(e.data, e.id) for e in events[:5]] == [(str(i), missed[i]) for i in range(5)]
            assert events[5].event == "ready"
        for worker in workers:
            await wait_for(worker, on_channel("alpha", 1))
        live = (await publish(nginx.url, "alpha", "live")).json()["id"]
        for stream in resumed:
            assert (await stream.next_event(5)).id == live
            with pytest.raises(TimeoutError):
                await stream.next_event(0.2)
    finally:
        for stream in resumed:
            await stream.close()


@pytest.mark.slow
async def test_nginx_health_passes_and_metrics_stay_private(
    nginx: Nginx, workers: list[Server]
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        health = await client.get(f"{nginx.url}/stream/health/")
        hidden = await client.get(f"{nginx.url}/stream/metrics/")
    assert health.status_code == 200
    assert health.json()["backend"] == "RedisBackend"
    assert hidden.status_code == 404
    for worker in workers:
        assert (await scrape(worker.url)).value("stream_sessions_open") == 0


@pytest.mark.slow
async def test_nginx_http2_carries_many_streams_on_one_tls_connection(
    nginx: Nginx, workers: list[Server], tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    count = 8  # above the 6 connections per host a browser allows over HTTP/1.1
    outputs = [tmp_path / f"stream{i}.txt" for i in range(count)]
    url = f"{nginx.https_url}/sse/?channel=beta"
    args = [item for path in outputs for item in (url, "-o", str(path))]
    proc = await asyncio.create_subprocess_exec(
        curl, "--http2", "--insecure", "--silent", "--show-error", "--parallel",
        "--parallel-max", str(count), "--no-buffer", "--max-time", "6",
        "-H", "Accept: text/event-stream", *args,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for_total(workers, "beta", count)
        # nginx balanced the HTTP/2 streams over both workers too.
        for worker in workers:
            assert (await scrape(worker.url)).value("stream_channel_sessions", channel="beta")
        sent = (await publish(nginx.url, "beta", "to every stream")).json()["id"]
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # curl stops each transfer at --max-time (exit 28); all that matters is what arrived.
    assert proc.returncode == 28, stderr
    for path in outputs:
        assert f"id: {sent}\ndata: to every stream\n" in path.read_text()
    deadline = time.monotonic() + 5
    while len(lines := [x for x in nginx.access_log() if "/sse/?channel=beta" in x]) < count:
        assert time.monotonic() < deadline, nginx.access_log()
        await asyncio.sleep(0.05)
    assert all("proto=HTTP/2.0" in line for line in lines), lines
    connections = {re.search(r"conn=(\d+)", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert len(connections) == 1, lines


async def wait_for_total(workers: list[Server], channel: str, count: int) -> None:
    """Wait until the workers together hold ``count`` sessions on ``channel``."""
    deadline = time.monotonic() + 10
    while True:
        scrapes = [await scrape(w.url) for w in workers]
        total = sum(s.value("stream_channel_sessions", channel=channel) for s in scrapes)
        if total == count:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{total} of {count} streams subscribed")
        await asyncio.sleep(0.05)
