"""The benchmark of django-stream-llm: ``python -m bench`` (full) or ``python -m bench --quick``.

It starts real servers pinned to core 0, drives them from a load generator on core 1, and
compares our endpoints with two yardsticks measured in the same run: a raw ASGI app and a plain
Django view. See bench/README.md.
"""
