"""The filter language: a table of filters and states, and malformed filters."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.filters import FilterError, compile_filter

STATE = {
    "user_id": 3,
    "role": "admin",
    "plan": "pro",
    "tags": ["beta", "early"],
    "is_staff": True,
    "score": 7.5,
    "profile": {"country": "NL", "plan": "team"},
    "nothing": None,
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"role": "admin"}, True),
        ({"role": "user"}, False),
        ({"role__eq": "admin"}, True),
        ({"user_id__in": [3, 7]}, True),
        ({"user_id__in": [4, 7]}, False),
        ({"user_id__nin": [4, 7]}, True),
        ({"plan__ne": "free"}, True),
        ({"plan__ne": "pro"}, False),
        ({"missing__ne": "x"}, True),
        ({"missing": "x"}, False),
        ({"missing__in": ["x"]}, False),
        ({"tags__contains": "beta"}, True),
        ({"tags__contains": "gamma"}, False),
        ({"role__icontains": "ADM"}, True),
        ({"role__startswith": "ad"}, True),
        ({"score__gt": 7}, True),
        ({"score__gte": 7.5}, True),
        ({"score__lt": 7.5}, False),
        ({"score__lte": 7.5}, True),
        ({"role__gt": 3}, False),
        ({"profile.country": "NL"}, True),
        ({"profile.country": "BE"}, False),
        ({"profile.plan__ne": "team"}, False),
        ({"profile.missing__exists": False}, True),
        ({"profile.country.deeper": "NL"}, False),
        ({"role.deeper__exists": False}, True),
        ({"nothing__exists": True}, True),
        ({"nothing": None}, True),
        ({"role": "admin", "plan": "free"}, False),
        ({"all": [{"role": "admin"}, {"plan": "pro"}]}, True),
        ({"all": [{"role": "admin"}, {"plan": "free"}]}, False),
        ({"any": [{"role": "user"}, {"user_id": 3}]}, True),
        ({"any": [{"role": "user"}, {"user_id": 4}]}, False),
        ({"not": {"role": "user"}}, True),
        ({"not": {"any": [{"is_staff": True}]}}, False),
    ],
)
def test_filter_matches_state(spec: dict[str, Any], expected: bool) -> None:
    predicate = compile_filter(spec)
    assert predicate is not None
    assert predicate(STATE) is expected


def test_filter_none_is_no_filter() -> None:
    assert compile_filter(None) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"role": "admin"}], "a filter is an object"),
        ("role=admin", "a filter is an object"),
        ({}, "empty filter"),
        ({"user_id__in": 3}, "needs a list"),
        ({"user_id__in": [[1]]}, "needs a list of scalars"),
        ({"role__startswith": 1}, "needs a string"),
        ({"role__exists": "yes"}, "needs true or false"),
        ({"role": {"nested": 1}}, "string, number, boolean or null"),
        ({"any": []}, "non-empty list"),
        ({"all": {"role": "x"}}, "non-empty list"),
        ({"not": "x"}, "a filter is an object"),
        ({"__in": [1]}, "empty field name"),
        ({"profile..plan": 1}, "empty field name"),
        ({".plan": 1}, "empty field name"),
        ({"plan.": 1}, "empty field name"),
        # "__" always introduces an operator: a typo is an error, never a nested key.
        ({"plan__nee": "free"}, "unknown operator '__nee'"),
        ({"profile__country": "NL"}, "unknown operator '__country'"),
        ({"a____b": 1}, "unknown operator '____b'"),
        ({"plan__": 1}, "unknown operator '__'"),
        ({"plan__ne__in": [1]}, "unknown operator '__ne__in'"),
    ],
)
def test_filter_malformed_raises_with_location(spec: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(spec)


def test_filter_too_deep_is_refused() -> None:
    spec: dict[str, Any] = {"role": "admin"}
    for _ in range(20):
        spec = {"not": spec}
    with pytest.raises(FilterError, match="nested more than"):
        compile_filter(spec)


def test_filter_unknown_operator_names_the_known_ones() -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter({"any": [{"role": "admin"}, {"plan__nee": "free"}]})
    message = str(caught.value)
    assert message.startswith("filter.any[1].plan__nee: unknown operator '__nee'")
    for op in ("eq", "ne", "in", "nin", "contains", "icontains", "startswith", "exists"):
        assert f"__{op}" in message
    assert "profile.plan" in message
