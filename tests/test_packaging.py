"""The package as users install it: the wheel, a core install with no extra, one per extra.

- The wheel holds what Django loads at run time (templates, static files, migrations) and
  ``py.typed``; its metadata is what PyPI shows (SPDX licence, version, extras, classifiers),
  and no checker or test tool is a published extra.
- ``pip install django-stream-llm`` (the wheel, dependencies resolved from the package index
  into a fresh virtualenv) brings Django and asgiref only; a ``startproject`` project with
  ``stream_app`` passes ``manage.py check`` and streams SSE in process; selecting a backend or
  feature whose extra is missing is system check ``stream_app.E008`` naming the extra, and using
  it raises an ImportError in the same words.
- A virtualenv per extra: its feature imports and E008 stays quiet.

The wheel is built once per session (``built_wheel`` in conftest). The virtualenvs are made
side by side (pip mostly waits for the index), and the sizes measured go to
``$STREAM_TEST_OUTPUT/install-sizes.json``.
"""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import stream_app
from tests.conftest import ROOT
from tests.wheels import make_venv, scratch_folder, site_packages_kb

# The first test waits for every virtualenv (a minute or two, more on a busy machine).
pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.timeout(900)]

OUTPUT = Path(os.environ.get("STREAM_TEST_OUTPUT", ROOT / "test-output"))
SIZES = OUTPUT / "install-sizes.json"

# What each extra's feature is selected by, in STREAM_APP (None: no setting selects it; it is
# imported by the project's own code).
SELECTIONS: dict[str, dict[str, Any] | None] = {
    "redis": {"BACKEND": "stream_app.backends.redis.RedisBackend"},
    "channels": {"BACKEND": "stream_app.backends.channels.ChannelsBackend"},
    "postgres": {"BACKEND": "stream_app.backends.postgres.PostgresBackend"},
    "llm": {"LLM_MODEL": "gpt-4o"},
    "metrics": {"METRICS_TOKEN": "secret"},
    "anthropic": None,
    "daphne": None,
    "testing": None,
}
# The modules that must import once the extra is installed.
FEATURE_MODULES: dict[str, list[str]] = {
    "redis": ["stream_app.backends.redis"],
    "channels": ["stream_app.backends.channels"],
    # The backend itself is not written yet: its driver and pool.
    "postgres": ["psycopg", "psycopg_pool"],
    "llm": ["stream_app.llm.openai", "stream_app.llm.offline"],
    "metrics": ["prometheus_client", "stream_app.metrics"],
    "anthropic": ["stream_app.llm.anthropic"],
    "daphne": ["daphne.server"],
    "testing": ["stream_app.testing.sockets"],
}
# The modules that stop at their guard without the extra.
GUARDED: dict[str, str] = {
    "stream_app.backends.redis": "redis",
    "stream_app.backends.channels": "channels",
    "stream_app.llm.openai": "llm",
    "stream_app.llm.offline": "llm",
    "stream_app.llm.anthropic": "anthropic",
    "stream_app.testing.sockets": "testing",
}
TOOLS = {
    "pytest",
    "pytest-django",
    "pytest-asyncio",
    "coverage",
    "hypothesis",
    "playwright",
    "ruff",
    "mypy",
    "django-stubs",
    "import-linter",
    "build",
    "twine",
}

SETTINGS = """
import json
import os

INSTALLED_APPS += ["stream_app"]
# The test picks the STREAM_APP of each run.
STREAM_APP = json.loads(os.environ.get("STREAM_APP_JSON") or '{"PUBLIC_CHANNELS": ["news"]}')
"""
URLS = """from django.contrib import admin
from django.urls import include, path

from stream_app.views import stream_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("sse/", stream_view),
    path("stream/", include("stream_app.urls")),
]
"""

# What works in an environment, asked from inside it in one process (Django starts once):
# the stream_app checks under each STREAM_APP, each module imported, each backend built as a
# request would, and the distributions installed. Errors are their messages, success None.
PROBE = """
import importlib, importlib.metadata, json, sys
import django
django.setup()
from django.core.checks import run_checks
from django.test import override_settings
from stream_app.backends import get_backend, reset_backend
asked = json.loads(sys.argv[1])
found = {"checks": {}, "imports": {}, "backends": {}}
for name, value in asked["selections"].items():
    with override_settings(STREAM_APP=value):
        found["checks"][name] = [
            [m.id, m.msg, m.hint] for m in run_checks() if m.id.startswith("stream_app")
        ]
for module in asked["modules"]:
    try:
        importlib.import_module(module)
        found["imports"][module] = None
    except ImportError as exc:
        found["imports"][module] = str(exc)
for path in asked["backends"]:
    reset_backend()
    with override_settings(STREAM_APP={"BACKEND": path}):
        try:
            get_backend()
            found["backends"][path] = None
        except ImportError as exc:
            found["backends"][path] = str(exc)
found["distributions"] = sorted(
    {d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}
)
print(json.dumps(found))
"""

# A stream read in process, as Django's AsyncClient gets it: the ready event, then a broadcast.
STREAM = """
import asyncio, json
import django
django.setup()
from django.test import AsyncClient
from django.test.utils import setup_test_environment
setup_test_environment()  # as a test runner does: the "testserver" host
from stream_app import abroadcast
from stream_app.protocol import Decoder

async def main():
    client = AsyncClient()
    response = await client.get("/sse/?channel=news")
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/event-stream"), response["Content-Type"]
    chunks = aiter(response.streaming_content)
    decoder = Decoder()
    seen = []
    try:
        async with asyncio.timeout(10):
            while "ready" not in [e.event for e in seen]:
                seen += decoder.feed(await anext(chunks))
            await abroadcast("news", {"title": "Hello"})
            while not any(e.data and "Hello" in e.data for e in seen):
                seen += decoder.feed(await anext(chunks))
    finally:
        response.session.close()
        await chunks.aclose()
    metrics = await client.get("/stream/metrics/")
    print(json.dumps({
        "events": [[e.event, e.data] for e in seen],
        "metrics": [metrics.status_code, json.loads(metrics.content)],
    }))

asyncio.run(main())
"""


@dataclass
class Project:
    """A ``startproject`` project with stream_app, in a virtualenv of its own."""

    root: Path
    python: Path

    def run(
        self, *args: str, stream_app: dict[str, Any] | None = None, settings: bool = True
    ) -> Any:
        """Run the venv's Python in the project (on its settings, and ``STREAM_APP`` as JSON),
        with none of the test environment's own settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STREAM_"))}
        env.pop("PYTHONPATH", None)
        if settings:
            env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
        if stream_app is not None:
            env["STREAM_APP_JSON"] = json.dumps(stream_app)
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def json(self, script: str, *args: str) -> Any:
        """The JSON a script prints."""
        result = self.run("-c", script, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    def probe(
        self,
        modules: list[str],
        backends: list[str] | None = None,
        selections: dict[str, Any] | None = None,
    ) -> Any:
        """What PROBE finds in this environment."""
        asked = {"modules": modules, "backends": backends or [], "selections": selections or {}}
        return self.json(PROBE, json.dumps(asked))


def new_project(tmp: Path, venv: Path, *requirements: str) -> Project:
    """A new project in ``tmp`` and a virtualenv at ``venv`` holding ``requirements``."""
    project = Project(tmp, make_venv(venv, *requirements))
    start = project.run("-m", "django", "startproject", "mysite", ".", settings=False)
    assert start.returncode == 0, start.stderr[-3000:]
    settings = tmp / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS)
    (tmp / "mysite" / "urls.py").write_text(URLS)
    return project


def record_size(name: str, python: Path, installed: list[str]) -> None:
    """Write the environment's distribution count and size under ``name`` to SIZES."""
    figures = {"distributions": len(installed), "site_packages_kb": site_packages_kb(python)}
    SIZES.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(SIZES.read_text()) if SIZES.exists() else {}
    known[name] = figures
    SIZES.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")


def wheel_metadata(wheel: Path) -> Any:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


# -- the wheel ----------------------------------------------------------------------------------


def test_wheel_holds_templates_static_files_migrations_and_py_typed(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as archive:
        names = set(archive.namelist())
    package = ROOT / "stream_app"
    for folder in ("templates", "static", "migrations"):
        expected = {
            f"stream_app/{path.relative_to(package).as_posix()}"
            for path in (package / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert expected, f"stream_app/{folder} is empty"
        assert expected <= names, sorted(expected - names)
    assert "stream_app/py.typed" in names
    dist_info = f"django_stream_llm-{stream_app.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    # The package only: no tests, demo project or bench.
    assert {name.split("/")[0] for name in names} == {"stream_app", dist_info}


def test_wheel_metadata_declares_licence_version_extras_and_a_lean_core(
    built_wheel: Path,
) -> None:
    metadata = wheel_metadata(built_wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Version"] == stream_app.__version__
    requires = [Requirement(text) for text in metadata.get_all("Requires-Dist")]
    assert sorted(r.name.lower() for r in requires if r.marker is None) == ["asgiref", "django"]
    extras = set(metadata.get_all("Provides-Extra"))
    assert set(SELECTIONS) | {"all", "server"} <= extras
    assert not extras & {"test", "lint", "dev"}
    assert not {r.name.lower() for r in requires} & TOOLS
    # The demo's (scripts/demo, the Dockerfile): the chat's model and the server, no test tools.
    server = {
        r.name.lower() for r in requires if r.marker and r.marker.evaluate({"extra": "server"})
    }
    assert server == {"django-stream-llm", "uvicorn"}
    # "all" is every extra (the suite's environment installs it: tests prove they co-install).
    (everything,) = [r for r in requires if r.marker and r.marker.evaluate({"extra": "all"})]
    assert everything.name == "django-stream-llm"
    assert everything.extras == set(SELECTIONS)
    classifiers = metadata.get_all("Classifier")
    for classifier in (
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ):
        assert classifier in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    # PEP 639: the licence is the expression, never a classifier as well.
    assert not any(c.startswith("License ::") for c in classifiers)


# -- the core install ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def projects(
    built_wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Project]]:
    """A new project in its own virtualenv for the core install and for each extra."""
    wanted = {"core": str(built_wheel)}
    wanted.update({extra: f"{built_wheel}[{extra}]" for extra in [*FEATURE_MODULES, "server"]})
    SIZES.unlink(missing_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="stream-app-venvs-", dir=scratch_folder()) as venvs,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        made = {
            name: pool.submit(
                new_project, tmp_path_factory.mktemp(name), Path(venvs, name), requirement
            )
            for name, requirement in wanted.items()
        }
        yield {name: future.result() for name, future in made.items()}


@pytest.fixture(scope="module")
def core(projects: dict[str, Project]) -> Project:
    """``pip install django-stream-llm`` (the wheel) and a migrated new project."""
    project = projects["core"]
    migrate = project.run("manage.py", "migrate", "-v0")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return project


def test_core_install_brings_django_and_asgiref_only(core: Project) -> None:
    installed = core.probe([])["distributions"]
    assert set(installed) <= {"django-stream-llm", "django", "asgiref", "sqlparse", "tzdata"}
    record_size("core", core.python, installed)


def test_core_project_passes_manage_py_check(core: Project) -> None:
    check = core.run("manage.py", "check")
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout


def test_core_streams_sse_in_process_and_metrics_name_their_extra(core: Project) -> None:
    found = core.json(STREAM)
    events = [event for event, _ in found["events"]]
    assert "ready" in events
    assert [None, '{"title":"Hello"}'] in found["events"]  # no event field: "message"
    status, body = found["metrics"]
    assert status == 501
    assert "django-stream-llm[metrics]" in body["message"]


def test_core_manage_py_check_names_the_missing_extra(core: Project) -> None:
    check = core.run("manage.py", "check", stream_app=SELECTIONS["redis"])
    assert check.returncode == 1
    assert "stream_app.E008" in check.stderr
    assert "install django-stream-llm[redis]" in check.stderr
    assert "pip install 'django-stream-llm[redis]'" in check.stderr


def test_core_names_the_missing_extra_in_checks_and_import_errors(core: Project) -> None:
    selected = {extra: value for extra, value in SELECTIONS.items() if value is not None}
    # The PostgreSQL backend is not written yet: its check only.
    backends = {
        "stream_app.backends.redis.RedisBackend": "redis",
        "stream_app.backends.channels.ChannelsBackend": "channels",
    }
    found = core.probe(list(GUARDED), list(backends), selected)
    for extra in selected:
        (error,) = found["checks"][extra]
        assert error[0] == "stream_app.E008", (extra, error)
        assert f"install django-stream-llm[{extra}]" in error[1]
        assert f"pip install 'django-stream-llm[{extra}]'" in error[2]
    # At run time: an ImportError in the same words, on import and when a request builds the
    # backend.
    for what, extra in [*GUARDED.items(), *backends.items()]:
        error = found["imports"].get(what) or found["backends"].get(what)
        assert error is not None, f"{what} works without its extra"
        assert f"install django-stream-llm[{extra}] (pip install 'django-stream-llm[{extra}]')" in (
            error
        )


# -- one virtualenv per extra -------------------------------------------------------------------


@pytest.mark.parametrize("extra", FEATURE_MODULES)
def test_extra_installs_what_its_feature_imports(extra: str, projects: dict[str, Project]) -> None:
    project = projects[extra]
    modules = FEATURE_MODULES[extra]
    selection = SELECTIONS[extra]
    found = project.probe(modules, selections={extra: selection} if selection else {})
    assert found["imports"] == dict.fromkeys(modules), found["imports"]
    if selection:
        assert "stream_app.E008" not in [error[0] for error in found["checks"][extra]]
    assert not set(found["distributions"]) & TOOLS
    record_size(extra, project.python, found["distributions"])


def test_server_extra_runs_the_demo_without_daphne_or_the_test_toolchain(
    projects: dict[str, Project], tmp_path: Path
) -> None:
    # scripts/demo installs the checkout with the server extra: the demo project (the checkout's
    # project/, on the path as the current folder) must start with what it brings.
    python = projects["server"].python
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STREAM_"))}
    env.pop("PYTHONPATH", None)
    env.update(DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DB_PATH=str(tmp_path / "db"))
    for command in (["-m", "django", "check"], ["-c", "import uvicorn, project.asgi"]):
        result = subprocess.run(
            [str(python), *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    installed = set(projects["server"].probe([])["distributions"])
    assert {"uvicorn", "openai", "httpx2"} <= installed
    assert not installed & (TOOLS | {"daphne", "twisted"})
    record_size("server", python, sorted(installed))
