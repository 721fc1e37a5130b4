"""The template tag that includes the JS client."""

from __future__ import annotations

from django.template import Context, Template


def render(source: str, **context: object) -> str:
    return Template("{% load stream_tags %}" + source).render(Context(context))


def test_stream_app_script_loads_the_static_file_deferred() -> None:
    assert render("{% stream_app_script %}") == (
        '<script src="/static/stream_app/stream.js" defer></script>'
    )


def test_stream_app_script_with_nonce_and_without_defer() -> None:
    html = render("{% stream_app_script defer=False nonce=nonce %}", nonce='n"<1>')
    assert html == '<script src="/static/stream_app/stream.js" nonce="n&quot;&lt;1&gt;"></script>'
