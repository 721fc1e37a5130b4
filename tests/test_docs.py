"""The docs' own checks: the settings page matches conf.DEFAULTS, the included files exist.

``scripts/check`` builds the site with ``mkdocs build --strict``; these are what a build cannot
see: a settings key added without its row, and a snippet line that a tool rewrote into text.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from stream_app.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
ROW_RE = re.compile(r"^\| `(?P<key>[A-Z0-9_]+)` \| `(?P<default>[^`]*)` \| (?P<meaning>.+) \|$")


def documented() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in SETTINGS_PAGE.read_text().splitlines():
        match = ROW_RE.match(line)
        if match:
            assert match["key"] not in rows, f"{match['key']} is documented twice"
            rows[match["key"]] = (match["default"], match["meaning"].strip())
    return rows


def test_settings_page_documents_every_key_and_no_other() -> None:
    assert sorted(documented()) == sorted(DEFAULTS)


def test_settings_page_defaults_are_the_real_ones() -> None:
    for key, (default, meaning) in documented().items():
        assert ast.literal_eval(default) == DEFAULTS[key], key
        assert len(meaning) > 20, f"{key}: say what it does"


def test_docs_snippet_lines_name_files_that_exist() -> None:
    """Each ``--8<--`` line is a well-formed include of a file (and section) that exists."""
    include_re = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')
    includes = 0
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for line in page.read_text().splitlines():
            if "8<" not in line and "8 <" not in line:
                continue
            match = include_re.match(line)
            assert match, f"{page.name}: not an include line: {line!r}"
            text = (ROOT / match["path"]).read_text()
            if match["section"]:
                assert f"--8<-- [start:{match['section']}]" in text, line
            includes += 1
    assert includes >= 8
