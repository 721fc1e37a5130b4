"""Per-session state filters that travel with an event as data.

A filter is JSON-compatible data evaluated by every worker against its own sessions' ``state``::

    {"role": "admin"}                       state["role"] == "admin"
    {"user_id__in": [3, 7]}                 state["user_id"] in [3, 7]
    {"plan__ne": "free"}                    state["plan"] != "free"
    {"tags__contains": "beta"}              "beta" in state["tags"]
    {"profile.plan": "pro"}                 state["profile"]["plan"] == "pro"
    {"profile.plan__ne": "free"}            state["profile"]["plan"] != "free"
    {"any": [{"is_staff": True}, {"user_id": 3}]}
    {"all": [...]}, {"not": {...}}

A key is a field name, a dot before each nested key, and optionally ``__`` and an operator
(``eq ne in nin contains icontains startswith gt gte lt lte exists``). ``__`` always starts an
operator, so a misspelt one (``plan__nee``) is an error rather than a nested key that matches
nobody; a state key holding ``__`` or ``.`` cannot be filtered on.

Several keys in one dict must all match. A missing key never matches, except with ``__exists``
(``{"email__exists": False}``) and ``__ne``/``__nin`` (a missing value differs from anything).
Malformed filters raise ``FilterError`` when compiled, before anything is published.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["FilterError", "Predicate", "compile_filter", "validate_filter"]

Predicate = Callable[[Mapping[str, Any]], bool]
_MISSING = object()
_MAX_DEPTH = 16


class FilterError(ValueError):
    """A filter that is not valid filter data; the message says where and why."""


def _contains(value: Any, operand: Any) -> bool:
    try:
        return operand in value
    except TypeError:
        return False


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(value: Any, operand: Any) -> bool:
        try:
            return op(value, operand)
        except TypeError:
            return False

    return compare


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda value, operand: value == operand,
    "ne": lambda value, operand: value != operand,
    "in": lambda value, operand: value in operand,
    "nin": lambda value, operand: value not in operand,
    "contains": _contains,
    "icontains": lambda value, operand: isinstance(value, str) and operand.lower() in value.lower(),
    "startswith": lambda value, operand: isinstance(value, str) and value.startswith(operand),
    "gt": _compare(lambda value, operand: value > operand),
    "gte": _compare(lambda value, operand: value >= operand),
    "lt": _compare(lambda value, operand: value < operand),
    "lte": _compare(lambda value, operand: value <= operand),
}
_MISSING_MATCHES = {"ne", "nin"}
_SCALARS = (str, int, float, bool, type(None))


def _check_operand(path: str, op: str, operand: Any) -> None:
    if op in ("in", "nin"):
        if not isinstance(operand, list | tuple) or not all(
            isinstance(item, _SCALARS) for item in operand
        ):
            raise FilterError(f"{path}: '__{op}' needs a list of scalars, got {operand!r}")
    elif op in ("icontains", "startswith"):
        if not isinstance(operand, str):
            raise FilterError(f"{path}: '__{op}' needs a string, got {operand!r}")
    elif op == "exists":
        if not isinstance(operand, bool):
            raise FilterError(f"{path}: '__exists' needs true or false, got {operand!r}")
    elif not isinstance(operand, _SCALARS):
        raise FilterError(f"{path}: '__{op}' needs a string, number, boolean or null")


_KNOWN = ", ".join(f"__{op}" for op in [*_OPERATORS, "exists"])


def _field(key: str, operand: Any, path: str) -> Predicate:
    name, has_op, op = key.partition("__")
    if not has_op:
        op = "eq"
    elif op not in _OPERATORS and op != "exists":
        # Never read as a nested key: "plan__nee" would silently match nobody.
        raise FilterError(
            f"{path}: unknown operator '__{op}'; known: {_KNOWN} "
            f"(nested keys take a dot: 'profile.plan')"
        )
    parts = name.split(".")
    if not all(parts):
        raise FilterError(f"{path}: empty field name in {key!r}")
    _check_operand(path, op, operand)
    if op in ("in", "nin"):
        operand = frozenset(operand)

    def lookup(state: Mapping[str, Any]) -> Any:
        value: Any = state
        for part in parts:
            if not isinstance(value, Mapping):
                return _MISSING
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value

    if op == "exists":
        wanted = bool(operand)
        return lambda state: (lookup(state) is not _MISSING) == wanted
    test = _OPERATORS[op]
    missing = op in _MISSING_MATCHES

    def predicate(state: Mapping[str, Any]) -> bool:
        value = lookup(state)
        if value is _MISSING:
            return missing
        try:
            return bool(test(value, operand))
        except TypeError:
            return False

    return predicate


def _compile(spec: Any, path: str, depth: int) -> Predicate:
    if depth > _MAX_DEPTH:
        raise FilterError(f"{path}: nested more than {_MAX_DEPTH} levels")
    if not isinstance(spec, Mapping):
        raise FilterError(f"{path}: a filter is an object, got {type(spec).__name__}")
    if not spec:
        raise FilterError(f"{path}: an empty filter matches everything; pass no filter instead")
    predicates: list[Predicate] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"{path}: keys are strings, got {key!r}")
        here = f"{path}.{key}"
        if key in ("all", "any"):
            if not isinstance(value, list | tuple) or not value:
                raise FilterError(f"{here}: needs a non-empty list of filters")
            parts = [_compile(item, f"{here}[{i}]", depth + 1) for i, item in enumerate(value)]
            predicates.append(_all(parts) if key == "all" else _any(parts))
        elif key == "not":
            predicates.append(_not(_compile(value, here, depth + 1)))
        else:
            predicates.append(_field(key, value, here))
    return predicates[0] if len(predicates) == 1 else _all(predicates)


def _all(parts: list[Predicate]) -> Predicate:
    return lambda state: all(p(state) for p in parts)


def _any(parts: list[Predicate]) -> Predicate:
    return lambda state: any(p(state) for p in parts)


def _not(inner: Predicate) -> Predicate:
    return lambda state: not inner(state)


def compile_filter(spec: Any) -> Predicate | None:
    """Compile filter data (or None) into a predicate over a session's state."""
    if spec is None:
        return None
    return _compile(spec, "filter", 0)


def validate_filter(spec: Any) -> None:
    """Raise FilterError if ``spec`` is not a valid filter."""
    compile_filter(spec)
