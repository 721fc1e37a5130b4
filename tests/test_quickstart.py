"""The README's Quick start, pasted literally into a brand-new project and run as a user would.

The blocks are read from README.md (each follows a ``<!-- quickstart:ACTION [PATH] -->``
marker), so the README and this test cannot drift apart. The package is installed from this
checkout as a built wheel into a fresh virtualenv (its dependencies come from the test
environment, so no download is needed; tests/test_packaging.py installs it with them),
``django-admin startproject`` makes the project, the blocks are appended or written as the
README says, and the project is served by uvicorn and by daphne. A browser-style client
(httpx-sse, and the README's own JavaScript in headless Chromium) must receive a broadcast sent
from a separate ``manage.py shell`` process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, RedisServer, free_port, wait_for_port
from tests.wheels import purelib

pytestmark = pytest.mark.slow

BLOCK_RE = re.compile(
    r"<!-- quickstart:(?P<action>\w+)(?: (?P<path>\S+))? -->\n```\w+\n(?P<body>.*?)```",
    re.DOTALL,
)


@dataclass
class Block:
    """One Quick start block: what to do with it, where, and its text."""

    action: str
    path: str | None
    body: str


def quickstart_blocks() -> list[Block]:
    """The Quick start section's marked blocks, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme[
        readme.index("## Quick start") : readme.index("\n## ", readme.index("## Quick start") + 1)
    ]
    return [Block(m["action"], m["path"], m["body"]) for m in BLOCK_RE.finditer(section)]


def test_quickstart_blocks_are_found() -> None:
    actions = [block.action for block in quickstart_blocks()]
    # Install, settings, asgi, urls, migrate+serve, the page's JS, the publish call, Redis
    # settings, the countdown view and its URL: a marker that goes missing fails here.
    assert actions.count("sh") == 2
    assert actions.count("js") == 1
    assert actions.count("python") == 1
    assert {"append", "write"} <= set(actions)
    assert len(actions) == 10


@dataclass
class Project:
    """The new project: its folder, its Python, and the environment to run it with."""

    root: Path
    python: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command of the project's Python in the project folder."""
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def serve(self, command: list[str], port: int) -> subprocess.Popen[bytes]:
        """Start a server command (``uvicorn ...`` or ``daphne ...``) on ``port``."""
        log = self.root / f"{command[0]}-{port}.log"
        if command[0] == "uvicorn":
            argv = [*command[1:], "--host", "127.0.0.1", "--port", str(port)]
        else:
            argv = ["-b", "127.0.0.1", "-p", str(port), *command[1:]]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(self.python), "-m", command[0], *argv],
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, proc, log)
        return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server as a user would (SIGTERM), killing it if it does not exit in time."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def apply_file_block(project: Project, block: Block) -> None:
    """Append the block to, or write it as, the file the README names."""
    assert block.path is not None, "append/write blocks name a file"
    target = project.root / block.path
    if block.action == "write":
        target.write_text(block.body)
    else:
        assert target.exists(), f"the README appends to {block.path}, which does not exist"
        target.write_text(target.read_text() + "\n" + block.body)


def install_from_checkout(tmp: Path, wheel: Path) -> Path:
    """A fresh virtualenv holding this checkout's wheel; returns its Python.

    The wheel (``built_wheel``, built once per session) is installed without dependencies; a
    ``.pth`` file lends the test environment's packages (Django, redis, uvicorn, daphne...) so
    that nothing else is downloaded.
    """
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    (purelib(python) / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=120,
    )
    return python


def run_shell_block(
    block: Block, tmp: Path, python: Path, env: dict[str, str]
) -> tuple[Path, list[list[str]]]:
    """Carry out a shell block's lines; returns the folder and the server commands seen.

    ``pip install`` was done from the checkout, ``django-admin`` is ``python -m django``, and a
    server command is returned for the test to start on a port of its own.
    """
    cwd = tmp
    servers: list[list[str]] = []
    for line in block.body.splitlines():
        words = shlex.split(line)
        if not words:
            continue
        if words[:2] == ["pip", "install"]:
            assert "django-stream-llm" in words
        elif words[0] == "django-admin":
            subprocess.run([str(python), "-m", "django", *words[1:]], cwd=cwd, env=env, check=True)
        elif words[0] == "cd":
            cwd = cwd / words[1]
        elif words[0] == "python":
            result = subprocess.run(
                [str(python), *words[1:]],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr[-3000:]
        elif words[0] in ("uvicorn", "daphne"):
            servers.append(words)
        else:
            pytest.fail(f"the Quick start runs a command this test does not know: {line!r}")
    return cwd, servers


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, built_wheel: Path
) -> tuple[Project, list[Block]]:
    """The new project after every file block and the first commands, ready to serve."""
    tmp = tmp_path_factory.mktemp("quickstart")
    python = install_from_checkout(tmp, built_wheel)
    blocks = quickstart_blocks()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STREAM_"))}
    env.pop("PYTHONPATH", None)
    root = tmp
    servers: list[list[str]] = []
    for block in blocks:
        if block.action == "sh":
            root, found = run_shell_block(block, root, python, env)
            servers += found
        elif block.action in ("append", "write"):
            apply_file_block(Project(root, python, env), block)
    assert servers == [["uvicorn", "mysite.asgi:application", "--lifespan", "on"]]
    return Project(root, python, env), blocks


def test_quickstart_installs_from_the_wheel(project: tuple[Project, list[Block]]) -> None:
    proj, _ = project
    where = proj.run("-c", "import stream_app; print(stream_app.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(proj.python.parent.parent) in where.stdout, "stream_app must come from the venv"
    check = proj.run("manage.py", "check")
    assert check.returncode == 0, check.stderr


def read_until(events: Iterator[object], wanted: str, limit: int = 50) -> object:
    """The first event of type ``wanted`` from an httpx-sse iterator."""
    for _, sse in zip(range(limit), events, strict=False):
        if sse.event == wanted:  # type: ignore[attr-defined]
            return sse
    pytest.fail(f"no {wanted!r} event")


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_quickstart_broadcast_from_another_process_reaches_the_stream(
    project: tuple[Project, list[Block]], private_redis: RedisServer, server: str
) -> None:
    proj, blocks = project
    env = {**proj.env, "REDIS_URL": private_redis.url}
    proj = Project(proj.root, proj.python, env)
    port = free_port()
    command = ["uvicorn", "mysite.asgi:application", "--lifespan", "on"]
    if server == "daphne":
        command = ["daphne", "mysite.asgi:application"]
    proc = proj.serve(command, port)
    (publish,) = [b.body for b in blocks if b.action == "python"]
    try:
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client,
            connect_sse(client, "GET", "/sse/?channel=news") as source,
        ):
            assert source.response.status_code == 200
            events = source.iter_sse()
            ready = read_until(events, "ready")
            assert json.loads(ready.data) == {"channels": ["news"]}  # type: ignore[attr-defined]
            sent = proj.run("manage.py", "shell", "-c", publish)
            assert sent.returncode == 0, sent.stderr[-3000:]
            message = read_until(events, "message")
            assert json.loads(message.data) == {"title": "Hello"}  # type: ignore[attr-defined]
            # The countdown view of the Quick start streams its ticks.
            with connect_sse(client, "GET", "/countdown/") as ticks:
                first = read_until(ticks.iter_sse(), "tick")
                assert json.loads(first.data) == {"n": 10}  # type: ignore[attr-defined]
    finally:
        stop(proc)


def test_quickstart_memory_backend_refuses_a_publish_from_another_process(
    project: tuple[Project, list[Block]],
) -> None:
    # The Quick start's first settings alone (memory backend): a publish from a process that
    # serves no streams would reach no one, so it fails and names the setting to change.
    proj, blocks = project
    settings_file = proj.root / "mysite" / "settings.py"
    saved = settings_file.read_text()
    redis_block = [b for b in blocks if b.action == "append" and "RedisBackend" in b.body]
    assert len(redis_block) == 1
    settings_file.write_text(saved.replace(redis_block[0].body, ""))
    try:
        (publish,) = [b.body for b in blocks if b.action == "python"]
        sent = proj.run("manage.py", "shell", "-c", publish)
    finally:
        settings_file.write_text(saved)
    assert sent.returncode != 0
    assert 'STREAM_APP["BACKEND"]' in sent.stderr or "STREAM_APP['BACKEND']" in sent.stderr
    assert "RedisBackend" in sent.stderr


@pytest.mark.browser
def test_quickstart_javascript_receives_the_broadcast_in_chromium(
    project: tuple[Project, list[Block]], private_redis: RedisServer
) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    proj, blocks = project
    proj = Project(proj.root, proj.python, {**proj.env, "REDIS_URL": private_redis.url})
    port = free_port()
    proc = proj.serve(["uvicorn", "mysite.asgi:application", "--lifespan", "on"], port)
    (script,) = [b.body for b in blocks if b.action == "js"]
    (publish,) = [b.body for b in blocks if b.action == "python"]
    logged: list[object] = []
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("console", lambda msg: logged.extend(a.json_value() for a in msg.args))
            # Any page of the same origin: the admin's login page is in every new project.
            page.goto(f"http://127.0.0.1:{port}/admin/login/")
            page.add_script_tag(content=script)
            page.wait_for_function("source.readyState === EventSource.OPEN", timeout=10_000)
            sent = proj.run("manage.py", "shell", "-c", publish)
            assert sent.returncode == 0, sent.stderr[-3000:]
            deadline = time.monotonic() + 10
            while not logged and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            browser.close()
    finally:
        stop(proc)
    assert logged == [{"title": "Hello"}]
