"""The filter language: a table of filters and states, and malformed filters."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.filters import (
    CACHE_BYTES,
    CACHE_SIZE,
    MAX_BYTES,
    MAX_LIST_ITEMS,
    MAX_NODES,
    MAX_STRING,
    FilterError,
    cached_filter,
    clear_filter_cache,
    compile_filter,
    filter_cache_info,
    validate_filter,
)

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


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"any": [{"user_id": i} for i in range(MAX_NODES)]}, f"more than {MAX_NODES} conditions"),
        ({"user_id__in": list(range(MAX_LIST_ITEMS + 1))}, f"more than {MAX_LIST_ITEMS} items"),
        (
            {"a__in": list(range(MAX_LIST_ITEMS // 2 + 1)), "b__nin": [0] * (MAX_LIST_ITEMS // 2)},
            f"more than {MAX_LIST_ITEMS} items",
        ),
        ({"role": "x" * (MAX_STRING + 1)}, f"longer than {MAX_STRING} characters"),
        ({"tags__in": ["x" * (MAX_STRING + 1)]}, f"longer than {MAX_STRING} characters"),
        ({"r" * (MAX_STRING + 1): 1}, f"longer than {MAX_STRING} characters"),
        ({"tags__in": ["x" * 900] * (MAX_BYTES // 900 + 1)}, f"over {MAX_BYTES} bytes"),
        # About 1 MB of filter: refused before anything is evaluated or cached.
        ({"any": [{"plan": "x" * 100} for _ in range(10_000)]}, "conditions"),
    ],
)
def test_filter_over_a_limit_is_refused(spec: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(spec)
    with pytest.raises(FilterError, match=message):
        cached_filter(spec)


def test_filter_at_the_limits_is_accepted() -> None:
    wide = compile_filter({"any": [{"user_id": i} for i in range(MAX_NODES - 1)]})
    long_list = compile_filter({"user_id__in": list(range(MAX_LIST_ITEMS))})
    assert wide is not None
    assert long_list is not None
    assert wide({"user_id": MAX_NODES - 2})
    assert long_list({"user_id": MAX_LIST_ITEMS - 1})


def test_filter_cache_is_bounded_by_size_and_count() -> None:
    clear_filter_cache()
    # Big distinct filters: the cache keeps what fits its byte budget, newest first.
    for i in range(60):
        predicate = cached_filter({"user_id__in": list(range(i, i + MAX_LIST_ITEMS))})
        assert predicate is not None
        assert predicate({"user_id": i})
        info = filter_cache_info()
        assert info.cost <= CACHE_BYTES
    assert 0 < info.entries < 60
    # Many small ones: bounded by count.
    for i in range(CACHE_SIZE + 50):
        cached_filter({"user_id": i})
        assert filter_cache_info().entries <= CACHE_SIZE
    # A hit returns the same predicate.
    assert cached_filter({"user_id": CACHE_SIZE + 49}) is cached_filter(
        {"user_id": CACHE_SIZE + 49}
    )


def test_filter_contains_on_a_value_that_holds_nothing_is_false() -> None:
    # 7 in 7.5 raises TypeError in Python: for a filter it is simply no match.
    assert compile_filter({"score__contains": 7})(STATE) is False
    assert compile_filter({"user_id__contains": 3})(STATE) is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({1: "x"}, "keys are strings, got 1"),
        ({"all": [{2: "y"}]}, "keys are strings, got 2"),
    ],
)
def test_filter_keys_must_be_strings(spec: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        validate_filter(spec)


def test_cached_filter_refuses_data_that_is_not_json() -> None:
    clear_filter_cache()
    with pytest.raises(FilterError, match="not JSON data"):
        cached_filter({"tags__contains": {"a", "b"}})
    # Refusals are not cached.
    assert filter_cache_info().entries == 0
