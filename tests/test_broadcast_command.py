"""Publishing from a process that serves no streams (a command, a shell, a cron job, a worker).

With the memory backend such a publish could reach nobody: it fails loudly, naming the setting
to change. With Redis the same command reaches a client of a real uvicorn worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from stream_app.testing import EventStream
from tests.conftest import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
SETTING = 'STREAM_APP["BACKEND"]'
REDIS_BACKEND = "stream_app.backends.redis.RedisBackend"


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` as a separate process on the test settings and database."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"],
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_broadcast_command_on_the_memory_backend_fails_naming_the_setting() -> None:
    done = run(["manage.py", "broadcast", "news", "hello"])
    assert done.returncode != 0
    assert done.stdout == ""
    assert SETTING in done.stderr
    assert REDIS_BACKEND in done.stderr
    assert "Traceback" not in done.stderr


def test_broadcast_from_code_in_a_process_serving_no_streams_raises() -> None:
    code = (
        "import django; django.setup()\n"
        "from stream_app import broadcast\n"
        "print('id', broadcast('news', {'n': 1}))\n"
    )
    done = run(["-c", code])
    assert done.returncode != 0
    assert "id " not in done.stdout
    assert "NotServingStreams" in done.stderr
    assert SETTING in done.stderr
    assert REDIS_BACKEND in done.stderr


async def test_broadcast_command_on_redis_reaches_a_uvicorn_client(
    server_factory: Any, redis_env: dict[str, str]
) -> None:
    server = server_factory("uvicorn", redis_env)
    async with EventStream(f"{server.url}/sse/?channel=news") as stream:
        while (await stream.next_event()).event != "ready":
            pass
        done = await asyncio.to_thread(
            run, ["manage.py", "broadcast", "news", "from cron", "--event", "ops"], redis_env
        )
        assert done.returncode == 0, done.stderr
        event = await stream.next_event(timeout=10)
    assert (event.event, event.data, event.id) == ("ops", "from cron", done.stdout.strip())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a b", "x"], "invalid channel name 'a b'"),
        (["news", "x", "--filter", "{not json"], "--filter is not JSON"),
        (["news", "x", "--filter", '{"plan__bogus": 1}'], "invalid --filter"),
        (["news", "x", "--event", "two\nlines"], "invalid --event"),
    ],
)
def test_broadcast_command_bad_arguments_are_clear_errors(args: list[str], message: str) -> None:
    # In this process (it serves streams): the arguments are refused before anything is sent.
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("broadcast", *args)
