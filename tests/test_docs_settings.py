"""docs/settings.md lists every key of stream_app.conf.DEFAULTS with its true default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from stream_app.conf import DEFAULTS

SETTINGS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
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
