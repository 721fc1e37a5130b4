"""Template tags of the JS client: ``{% load stream_tags %}{% stream_app_script %}``."""

from __future__ import annotations

from django import template
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString

__all__ = ["stream_app_script"]

register = template.Library()


@register.simple_tag
def stream_app_script(defer: bool = True, nonce: str = "") -> SafeString:
    """A ``<script>`` tag loading ``stream_app/stream.js`` (which defines ``StreamApp``).

    ``nonce`` is added for a Content-Security-Policy that requires one.
    """
    return format_html(
        '<script src="{}"{}{}></script>',
        static("stream_app/stream.js"),
        format_html(' nonce="{}"', nonce) if nonce else "",
        SafeString(" defer") if defer else "",
    )
