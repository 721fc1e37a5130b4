"""scripts/demo and the ``ensure_venv`` it shares with scripts/test.

``start_demo`` runs the real scripts/demo with ``DEMO_PYTHON`` (this interpreter's environment,
so nothing is installed) on the test database. The install logic is tested on copies of the
scripts whose ``.venv/bin/python`` is a stand-in that records its arguments: pip cannot reach
a package index here, so a stub is the only way to see what would be installed when.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import LOG_DIR, ROOT, Server, free_port

STUB_PYTHON = """#!/bin/sh
printf '%s\\n' "$*" >> "$CALLS"
if [ "$1" = "-c" ]; then exec "$REAL_PYTHON" "$@"; fi
exit 0
"""


def start_demo(env: dict[str, str], host: str = "127.0.0.1") -> Server:
    """Run scripts/demo on ``host`` and a free port, serving the test project and database."""
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"],
        "DEMO_PYTHON": sys.executable,
        "HOST": host,
        "PORT": str(port),
        **env,
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"demo-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "demo")],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server("demo", port, proc, log, env)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"scripts/demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.socket(family) as sock:
                sock.settimeout(0.2)
                sock.connect((host, port))
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop(signal.SIGKILL)
                pytest.fail(f"scripts/demo never listened:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """scripts/ and pyproject.toml copied, with a recording stand-in for .venv/bin/python."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    return tmp_path


def run_copy(
    copy: Path, *command: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``command`` in ``copy``; returns the result and the stand-in's calls in this run."""
    calls = copy / "calls.txt"
    calls.write_text("")
    result = subprocess.run(
        command,
        cwd=copy,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(copy),
            "CALLS": str(calls),
            "REAL_PYTHON": sys.executable,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, calls.read_text().splitlines()


# Every install brings each dependency to its newest release within pyproject.toml's bounds.
UPGRADE = "-m pip install -q --upgrade --upgrade-strategy eager"
# Before installing a dependency group: a pip that knows --group.
PIP_FOR_GROUPS = "-m pip install -q pip>=25.1"


def pip_calls(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("-m pip ")]


def test_demo_installs_the_project_and_its_server_once(demo_copy: Path) -> None:
    first, calls = run_copy(demo_copy, "bash", "scripts/demo", PORT="8123")
    assert first.returncode == 0, first.stderr
    assert pip_calls(calls) == [f"{UPGRADE} -e .[server] django>=5.2,<6"]
    assert "manage.py migrate --noinput -v0" in calls
    assert calls[-1] == (
        "-m uvicorn project.asgi:application --host 127.0.0.1 --port 8123"
        " --lifespan on --timeout-graceful-shutdown 10"
    )
    assert "open http://127.0.0.1:8123/ in a browser" in first.stdout
    # Up to date: the next start installs nothing.
    again, calls = run_copy(demo_copy, "bash", "scripts/demo")
    assert again.returncode == 0, again.stderr
    assert pip_calls(calls) == []
    assert "--port 8000" in calls[-1]
    # A changed pyproject.toml (new dependencies) installs again.
    with (demo_copy / "pyproject.toml").open("a") as pyproject:
        pyproject.write("# changed\n")
    _, calls = run_copy(demo_copy, "bash", "scripts/demo")
    assert len(pip_calls(calls)) == 1


def test_ensure_venv_keeps_one_stamp_per_extras_and_requirements(demo_copy: Path) -> None:
    ensure = '. scripts/_env.sh && ensure_venv "$@"'
    args = ("bash", "-c", ensure, "ensure_venv", ".venv", "python3")
    _, calls = run_copy(demo_copy, *args, "test", "django>=5.2,<6")
    assert pip_calls(calls) == [PIP_FOR_GROUPS, f"{UPGRADE} -e . --group test django>=5.2,<6"]
    _, calls = run_copy(demo_copy, *args, "test", "django>=5.2,<6")
    assert pip_calls(calls) == []
    _, calls = run_copy(demo_copy, *args, "test", "django>=6,<7")
    assert pip_calls(calls) == [PIP_FOR_GROUPS, f"{UPGRADE} -e . --group test django>=6,<7"]


def test_ensure_venv_installs_groups_with_group_and_the_rest_as_extras(demo_copy: Path) -> None:
    # The test tools are a dependency group (never a published extra): pip's --group.
    ensure = '. scripts/_env.sh && ensure_venv "$@"'
    args = ("bash", "-c", ensure, "ensure_venv", ".venv", "python3")
    _, calls = run_copy(demo_copy, *args, "metrics,test,redis")
    assert pip_calls(calls) == [PIP_FOR_GROUPS, f"{UPGRADE} -e .[metrics,redis] --group test"]
    _, calls = run_copy(demo_copy, *args, "server,metrics")
    assert pip_calls(calls) == [f"{UPGRADE} -e .[server,metrics]"]


def test_ensure_venv_looks_for_newer_releases_when_the_refresh_key_changes(
    demo_copy: Path,
) -> None:
    # scripts/test sets the key to the date: the newest releases within the bounds, daily.
    ensure = '. scripts/_env.sh && ensure_venv "$@"'
    args = ("bash", "-c", ensure, "ensure_venv", ".venv", "python3", "test")
    _, calls = run_copy(demo_copy, *args, ENSURE_VENV_REFRESH="2026-01-01")
    assert pip_calls(calls) == [PIP_FOR_GROUPS, f"{UPGRADE} -e . --group test"]
    _, calls = run_copy(demo_copy, *args, ENSURE_VENV_REFRESH="2026-01-01")
    assert pip_calls(calls) == []
    _, calls = run_copy(demo_copy, *args, ENSURE_VENV_REFRESH="2026-01-02")
    assert pip_calls(calls) == [PIP_FOR_GROUPS, f"{UPGRADE} -e . --group test"]


@pytest.mark.parametrize(
    ("host", "shown"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("localhost", "localhost")],
)
def test_demo_prints_an_address_a_browser_can_open(demo_copy: Path, host: str, shown: str) -> None:
    result, calls = run_copy(demo_copy, "bash", "scripts/demo", HOST=host, PORT="9000")
    assert result.returncode == 0, result.stderr
    assert f"open http://{shown}:9000/ in a browser" in result.stdout
    assert f"--host {host} --port 9000" in calls[-1]


@pytest.mark.parametrize("port", ["abc", "0", "70000", ""])
def test_demo_refuses_a_port_that_is_not_one(demo_copy: Path, port: str) -> None:
    result, calls = run_copy(demo_copy, "bash", "scripts/demo", PORT=port)
    if port == "":
        # An empty PORT is no PORT: the default.
        assert result.returncode == 0
        assert "--port 8000" in calls[-1]
        return
    assert result.returncode == 2
    assert "PORT must be a port number" in result.stderr
    assert calls == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("host", "shown"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
async def test_demo_serves_the_chat_to_a_superuser_where_it_says(host: str, shown: str) -> None:
    boss = await sync_to_async(User.objects.create_superuser)("boss", password="pw")
    client = Client()
    await sync_to_async(client.force_login)(boss)
    cookies = {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}
    server = start_demo({}, host=host)
    try:
        said = [line for line in server.log.read_text().splitlines() if line.startswith("demo:")]
        assert said == [
            f"demo: open http://{shown}:{server.port}/ in a browser"
            f" (events: curl -N http://{shown}:{server.port}/sse/)"
        ]
        async with httpx.AsyncClient(cookies=cookies, timeout=15) as http:
            page = await http.get(f"http://{shown}:{server.port}/")
    finally:
        server.stop()
    assert page.status_code == 200, page.text[-2000:]
    assert f"user:{boss.pk}" in page.text


def test_readmes_open_pages_portably_and_deploy_readme_is_no_draft() -> None:
    readme = (ROOT / "README.md").read_text()
    # macOS's `open` is not a command elsewhere: say "open ... in a browser" instead.
    assert not [line for line in readme.splitlines() if line.startswith("open http")]
    deploy = (ROOT / "deploy" / "README.md").read_text()
    opening = deploy.split("\n\n", 2)[:2]
    assert not any("draft" in part.lower() for part in opening), opening
