"""Encoding: turning pushed data into the text of a ``data:`` field."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

__all__ = ["Serializer", "compact_json"]


class Serializer:
    """Turns pushed data into the text of a ``data:`` field."""

    def dumps(self, data: Any) -> str:  # pragma: no cover - interface
        """Serialize ``data`` to text."""
        raise NotImplementedError


_json_encoder = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    check_circular=False,
    default=DjangoJSONEncoder().default,
)


def compact_json(data: Any) -> str:
    """Compact JSON with Django's encoder for dates, decimals, UUIDs and lazy strings.

    Exact ints (the commonest token payload) skip the encoder; the rest goes through one
    shared ``JSONEncoder`` whose C implementation handles the containers.
    """
    if type(data) is int:
        return str(data)
    return _json_encoder.encode(data)
