"""``audience_filter``: the broadcast filter each notification audience becomes."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.filters import FilterError, compile_filter
from stream_app.notifications.sending import audience_filter


@pytest.mark.parametrize(
    ("audience", "kwargs", "expected"),
    [
        ("everyone", {}, None),
        ("staff", {}, {"is_staff": True}),
        ("superusers", {}, {"is_superuser": True}),
        ("users", {"user_ids": [3, 1]}, {"user_id__in": [1, 3]}),
        ("groups", {"group_names": ["ops"]}, {"groups__contains": "ops"}),
        (
            "groups",
            {"group_names": ["ops", "dev"]},
            {"any": [{"groups__contains": "dev"}, {"groups__contains": "ops"}]},
        ),
        ("filter", {"state_filter": {"plan": "pro"}}, {"plan": "pro"}),
    ],
)
def test_audience_filter_of_each_audience(
    audience: str, kwargs: dict[str, Any], expected: Any
) -> None:
    spec = audience_filter(audience, **kwargs)
    assert spec == expected
    if spec is not None:
        # What it returns is a filter the channels accept.
        assert compile_filter(spec) is not None


@pytest.mark.parametrize(
    ("audience", "kwargs", "message"),
    [
        ("users", {"user_ids": []}, "choose at least one user"),
        ("groups", {}, "choose at least one group"),
        ("filter", {}, "enter a filter"),
        ("everybody", {}, "unknown audience 'everybody'"),
    ],
)
def test_audience_filter_that_names_nobody_is_refused(
    audience: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        audience_filter(audience, **kwargs)


def test_audience_filter_malformed_advanced_filter_is_a_filter_error() -> None:
    with pytest.raises(FilterError):
        audience_filter("filter", state_filter={"plan__bogus": 1})
