"""The pytest plugin as a user's project meets it: the README's "Testing your streams" example,
run by a separate pytest with its own configuration (pytest-django, pytest-asyncio in its
default strict mode), finding the fixtures through the ``pytest11`` entry point only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BLOCK_RE = re.compile(r"<!-- testing:python (?P<path>\S+) -->\n```python\n(?P<body>.*?)```", re.S)
# What a user's pyproject says (their settings module is ours here).
CONFIG = (
    "[pytest]\nDJANGO_SETTINGS_MODULE = tests.settings\n"
    "asyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
)


def run_readme_example(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Write the README's example into an empty folder and run pytest on it there."""
    readme = (ROOT / "README.md").read_text()
    [block] = BLOCK_RE.finditer(readme)
    (tmp_path / block["path"]).write_text(block["body"])
    (tmp_path / "pytest.ini").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_readme_example_passes_with_the_plugin_from_its_entry_point(tmp_path: Path) -> None:
    result = run_readme_example(tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout


def test_without_the_plugin_the_fixtures_do_not_exist(tmp_path: Path) -> None:
    result = run_readme_example(tmp_path, "-p", "no:stream_app")
    assert result.returncode != 0
    assert "fixture 'stream_client' not found" in result.stdout
