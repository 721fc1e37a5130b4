"""Notification bodies as safe HTML: plain text, or a small markdown subset.

Everything is HTML-escaped *first*; only then are a few markdown forms turned into a fixed set of
tags, so no input can produce markup of its own. Supported: paragraphs (blank line), line breaks,
``- item`` lists, ``**bold**``, ``*italic*``, ```code```, and ``[text](url)`` where the URL is
``http(s)://`` or a path on this site (anything else, ``javascript:`` included, stays text).
"""

from __future__ import annotations

import html
import re

__all__ = ["render_body"]

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
# Applied to escaped text: a quote is already &quot;, so an href cannot break out.
_LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?://|/(?!/))[^\s()]*)\)")
_BULLET = re.compile(r"^\s*[-*] ")
_PLACEHOLDER = "\x00{}\x00"


def _inline(escaped: str) -> str:
    codes: list[str] = []

    def keep(match: re.Match[str]) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return _PLACEHOLDER.format(len(codes) - 1)

    # Code spans first, so that nothing inside them is formatted.
    text = _CODE.sub(keep, escaped)
    text = _LINK.sub(r'<a href="\2" rel="noopener noreferrer">\1</a>', text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    for index, code in enumerate(codes):
        text = text.replace(_PLACEHOLDER.format(index), code)
    return text


def _markdown(text: str) -> str:
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.split("\n")]
        if all(_BULLET.match(line) for line in lines):
            items = "".join(
                f"<li>{_inline(html.escape(_BULLET.sub('', line)))}</li>" for line in lines
            )
            blocks.append(f"<ul>{items}</ul>")
        else:
            blocks.append(f"<p>{'<br>'.join(_inline(html.escape(line)) for line in lines)}</p>")
    return "".join(blocks)


def render_body(text: str, body_format: str = "plain") -> str:
    """The body as HTML that is safe to insert into a page."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if not text.strip():
        return ""
    if body_format == "markdown":
        return _markdown(text)
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "".join(
        "<p>" + "<br>".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )
