"""Notification bodies as data, never as HTML; and the one rule for links.

``body_nodes`` parses a body (plain text, or a small markdown subset) into a tree of plain data
that the browser builds with ``createElement`` and text nodes (``notifications.js``): a node is
either a string (text) or ``{"tag": ..., "children": [...]}`` with a tag from ``TAGS``, and
``"href"`` on ``a``. Nothing is ever parsed as HTML, on either side, so no input can produce
markup of its own; the client still accepts only these tags and re-checks every link, because
a publisher can send any payload through the publish endpoint.

Markdown subset: paragraphs (blank line), line breaks, ``- item`` lists, ``**bold**``,
``*italic*``, ```code```, and ``[text](url)`` where the URL passes ``is_safe_link`` (anything
else stays text).

``is_safe_link``: an absolute ``http(s)://host...`` URL or a path on this site (``/...``), with
no whitespace, control character or backslash anywhere. That refuses ``javascript:``,
``data:``, ``vbscript:`` in any case, protocol-relative ``//host`` and the forms browsers
normalise into it (``/\\host``, ``/<TAB>/host``: the URL parser drops tabs and newlines and reads
``\\`` as ``/``), and a scheme hidden behind leading spaces or control characters.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["TAGS", "body_nodes", "check_link", "is_safe_link"]

#: The only tags a body may have.
TAGS = frozenset({"p", "br", "ul", "li", "strong", "em", "code", "a"})
#: Longest link accepted.
MAX_LINK = 2000

_UNSAFE_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f\\]")
_SAFE_START = re.compile(r"https?://[^/?#]|/(?!/)", re.IGNORECASE)
_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<href>[^\s()]*)\)"
    r"|\*\*(?=\S)(?P<bold>.+?)(?<=\S)\*\*"
    r"|(?<![\w*])\*(?=\S)(?P<italic>[^*\n]+?)(?<=\S)\*(?![\w*])"
)
_BULLET = re.compile(r"^\s*[-*] ")

Node = str | dict[str, Any]


def is_safe_link(value: object) -> bool:
    """Whether ``value`` may become an ``href`` (see the module docstring)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_LINK
        and not _UNSAFE_CHAR.search(value)
        and _SAFE_START.match(value) is not None
    )


def check_link(value: str) -> str:
    """Return ``value`` if it is empty (no link) or a safe link, else raise ValueError."""
    if value == "" or is_safe_link(value):
        return value
    raise ValueError(
        f"link must be an http(s) URL or a path starting with '/', without spaces, control "
        f"characters or backslashes; got {value[:80]!r}"
    )


def _element(tag: str, children: list[Node], **attributes: str) -> dict[str, Any]:
    return {"tag": tag, **attributes, "children": children}


def _append(nodes: list[Node], node: Node) -> None:
    if isinstance(node, str) and nodes and isinstance(nodes[-1], str):
        nodes[-1] += node
    elif node != "":
        nodes.append(node)


def _inline(text: str, *, links: bool = True) -> list[Node]:
    nodes: list[Node] = []
    position = 0
    for match in _INLINE.finditer(text):
        _append(nodes, text[position : match.start()])
        position = match.end()
        if match["code"] is not None:
            # Nothing inside a code span is formatted.
            _append(nodes, _element("code", [match["code"]]))
        elif match["label"] is not None:
            if links and is_safe_link(match["href"]):
                label = _inline(match["label"], links=False)
                _append(nodes, _element("a", label, href=match["href"]))
            else:
                _append(nodes, match[0])
        elif match["bold"] is not None:
            _append(nodes, _element("strong", _inline(match["bold"], links=links)))
        else:
            _append(nodes, _element("em", _inline(match["italic"], links=links)))
    _append(nodes, text[position:])
    return nodes


def _lines(lines: list[str], markdown: bool) -> list[Node]:
    nodes: list[Node] = []
    for index, line in enumerate(lines):
        if index:
            nodes.append({"tag": "br"})
        for node in _inline(line) if markdown else [line]:
            _append(nodes, node)
    return nodes


def body_nodes(text: str, body_format: str = "plain") -> list[Node]:
    """The body as a tree of plain data (see the module docstring); ``[]`` when empty."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if not text.strip():
        return []
    markdown = body_format == "markdown"
    blocks: list[Node] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.split("\n")]
        if markdown and all(_BULLET.match(line) for line in lines):
            items: list[Node] = [_element("li", _inline(_BULLET.sub("", line))) for line in lines]
            blocks.append(_element("ul", items))
        else:
            blocks.append(_element("p", _lines(lines if markdown else block.split("\n"), markdown)))
    return blocks
