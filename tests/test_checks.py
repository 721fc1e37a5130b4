"""System checks: each id, raised exactly when its mistake is present."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from django.core.checks import Tags, run_checks
from django.test import override_settings

from stream_app import checks


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_check_e001_runserver_without_daphne(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    assert ids(checks.check_server()) == ["stream_app.E001"]
    assert "stream_app.E001" in ids(run_checks(tags=[Tags.compatibility]))


def test_check_e001_quiet_with_daphne_or_other_commands(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    assert "daphne" in settings.INSTALLED_APPS
    assert checks.check_server() == []
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    monkeypatch.setattr(sys, "argv", ["manage.py", "migrate"])
    assert checks.check_server() == []


def test_check_w002_gzip_middleware(settings: Any) -> None:
    assert checks.check_gzip() == []
    settings.MIDDLEWARE = ["django.middleware.gzip.GZipMiddleware", *settings.MIDDLEWARE]
    assert ids(checks.check_gzip()) == ["stream_app.W002"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, []),
        ({"KEEP_ALIVE": 5, "RETRY": None}, []),
        ({"TYPO": 1}, ["stream_app.E003"]),
        ([], ["stream_app.E004"]),
        ({"MAX_QUEUE": 0}, ["stream_app.E006"]),
        ({"KEEP_ALIVE": -1}, ["stream_app.E006"]),
        ({"RETRY": "soon"}, ["stream_app.E006"]),
        ({"HISTORY_SIZE": 1.5, "TYPO": 1}, ["stream_app.E003", "stream_app.E006"]),
        ({"GC_THRESHOLD": None}, []),
        ({"GC_THRESHOLD": [10_000]}, []),
        ({"GC_THRESHOLD": (0, 10, 10)}, ["stream_app.E006"]),
        ({"GC_THRESHOLD": 700}, ["stream_app.E006"]),
        ({"MAX_CHANNELS_PER_STREAM": 0}, ["stream_app.E006"]),
        ({"MAX_CONNECTIONS_PER_ADDRESS": None, "MAX_CONNECTIONS_PER_USER": 3}, []),
        ({"MAX_CONNECTIONS_PER_ADDRESS": 0}, ["stream_app.E006"]),
        ({"MAX_CONNECTIONS_PER_USER": "3"}, ["stream_app.E006"]),
        ({"CLIENT_ADDRESS_HEADER": "X-Forwarded-For"}, []),
        ({"CLIENT_ADDRESS_HEADER": "HTTP_X_FORWARDED_FOR"}, ["stream_app.E006"]),
        ({"CLIENT_ADDRESS_HEADER": ""}, ["stream_app.E006"]),
        ({"REDIS_MAX_CONNECTIONS": 0}, ["stream_app.E006"]),
        ({"REDIS_OPTIONS": None}, ["stream_app.E006"]),
        ({"REDIS_SENTINELS": [("127.0.0.1", 26379)], "REDIS_SENTINEL_SERVICE": "svc"}, []),
        ({"REDIS_SENTINELS": [("127.0.0.1", 26379)]}, ["stream_app.E006"]),
        (
            {"REDIS_SENTINELS": ["127.0.0.1:26379"], "REDIS_SENTINEL_SERVICE": "svc"},
            ["stream_app.E006"],
        ),
    ],
)
def test_check_settings(value: Any, expected: list[str]) -> None:
    with override_settings(STREAM_APP=value):
        assert ids(checks.check_settings()) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("stream_app.backends.memory.MemoryBackend", []),
        ("stream_app.backends.redis.RedisBackend", []),
        ("stream_app.backends.nope.NopeBackend", ["stream_app.E005"]),
    ],
)
def test_check_e005_backend_import(path: str, expected: list[str]) -> None:
    with override_settings(STREAM_APP={"BACKEND": path}):
        assert ids(checks.check_backend()) == expected


def test_checks_are_registered() -> None:
    with override_settings(STREAM_APP={"TYPO": 1}):
        assert "stream_app.E003" in ids(run_checks(tags=[Tags.compatibility]))


@pytest.mark.parametrize(
    ("variable", "value", "backend", "warned"),
    [
        ("WEB_CONCURRENCY", "4", "stream_app.backends.memory.MemoryBackend", True),
        ("UVICORN_WORKERS", "2", "stream_app.backends.memory.MemoryBackend", True),
        ("WEB_CONCURRENCY", "1", "stream_app.backends.memory.MemoryBackend", False),
        ("WEB_CONCURRENCY", "many", "stream_app.backends.memory.MemoryBackend", False),
        ("WEB_CONCURRENCY", "4", "stream_app.backends.redis.RedisBackend", False),
    ],
)
def test_check_w007_memory_backend_with_several_workers(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, backend: str, warned: bool
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("UVICORN_WORKERS", raising=False)
    monkeypatch.setenv(variable, value)
    with override_settings(STREAM_APP={"BACKEND": backend}):
        found = ids(checks.check_workers())
        assert found == (["stream_app.W007"] if warned else [])
        assert ("stream_app.W007" in ids(run_checks(tags=[Tags.compatibility]))) is warned


# E008: a missing extra. Here every extra is installed, so a module is hidden the way Python
# itself blocks an import (None in sys.modules raises ImportError); tests/test_packaging.py
# runs the same checks in virtualenvs where the extras are really absent.
@pytest.mark.parametrize(
    ("value", "hidden", "extra"),
    [
        ({"BACKEND": "stream_app.backends.redis.RedisBackend"}, "redis", "redis"),
        ({"BACKEND": "stream_app.backends.channels.ChannelsBackend"}, "channels", "channels"),
        ({"BACKEND": "stream_app.backends.postgres.PostgresBackend"}, "psycopg", "postgres"),
        ({"LLM_BASE_URL": "http://127.0.0.1:1/v1"}, "openai", "llm"),
        ({"LLM_MODEL": "gpt-4o"}, "httpx2", "llm"),
        ({"METRICS_TOKEN": "secret"}, "prometheus_client", "metrics"),
    ],
)
def test_check_e008_names_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch, value: dict[str, Any], hidden: str, extra: str
) -> None:
    with override_settings(STREAM_APP=value):
        assert checks.check_extras() == []
        monkeypatch.setitem(sys.modules, hidden, None)
        (error,) = checks.check_extras()
        assert error.id == "stream_app.E008"
        assert f"install django-stream-llm[{extra}]" in error.msg
        assert f"needs {hidden}, which is not installed" in error.msg
        assert f"pip install 'django-stream-llm[{extra}]'" in error.hint
        # One error for one cause: E005 stays quiet when only the extra is missing.
        assert checks.check_backend() == []
        assert "stream_app.E008" in ids(run_checks(tags=[Tags.compatibility]))


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"LLM_COALESCE_MS": 20, "GENERATION_GRACE": 5.0},  # llm_response needs no SDK
        {"METRICS_TOKEN": None},
    ],
)
def test_check_e008_quiet_when_nothing_needs_an_extra(
    monkeypatch: pytest.MonkeyPatch, value: dict[str, Any]
) -> None:
    for module in ("redis", "channels", "psycopg", "openai", "httpx2", "prometheus_client"):
        monkeypatch.setitem(sys.modules, module, None)
    with override_settings(STREAM_APP=value):
        assert checks.check_extras() == []


def test_check_e008_for_a_backend_module_that_raises_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A dotted path outside the shipped backends whose module stops at its extra's guard
    # (imported afresh, with the anthropic SDK hidden): E008 with its words, not E005.
    import stream_app.llm.anthropic  # noqa: F401  (so that monkeypatch can restore it)

    monkeypatch.delitem(sys.modules, "stream_app.llm.anthropic")
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with override_settings(STREAM_APP={"BACKEND": "stream_app.llm.anthropic.AnthropicBackend"}):
        (error,) = checks.check_backend()
    assert error.id == "stream_app.E008"
    assert "install django-stream-llm[anthropic]" in error.msg
