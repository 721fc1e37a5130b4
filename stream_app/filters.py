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

Limits: a filter runs once per session on every worker for each event, and compiled filters are
cached, so a filter over any of ``MAX_DEPTH``, ``MAX_NODES``, ``MAX_LIST_ITEMS``, ``MAX_STRING``
or ``MAX_BYTES`` is refused while it is compiled, before it is evaluated or cached: by the
publisher (``FilterError``), and by every worker for a filter that arrives from elsewhere.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "CACHE_BYTES",
    "CACHE_SIZE",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_NODES",
    "MAX_STRING",
    "CacheInfo",
    "FilterError",
    "Predicate",
    "cached_filter",
    "clear_filter_cache",
    "compile_filter",
    "filter_cache_info",
    "validate_filter",
]

Predicate = Callable[[Mapping[str, Any]], bool]
_MISSING = object()

#: Levels of ``all``/``any``/``not`` nesting.
MAX_DEPTH = 16
#: Conditions (each key of each dict: fields and ``all``/``any``/``not``), together.
MAX_NODES = 256
#: Items of all ``__in``/``__nin`` lists together (a list becomes a set: one lookup per session).
MAX_LIST_ITEMS = 10_000
#: Characters of one key or one string operand.
MAX_STRING = 1_000
#: About this many bytes of JSON (keys and strings as written, 8 per number, boolean or null).
MAX_BYTES = 128 * 1024
#: The cache of compiled filters (``cached_filter``) keeps at most CACHE_SIZE filters and about
#: CACHE_BYTES of memory for them, dropping the least recently used first. A compiled filter
#: holds its strings and about 800 bytes per condition and 64 per list item.
CACHE_SIZE = 1_000
CACHE_BYTES = 16 * 1024 * 1024


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


def _show(value: Any) -> str:
    """``repr`` for an error message, cut short: filters come from publishers and other hosts."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


class _Budget:
    """What a filter has used of the limits so far; raises as soon as one is passed."""

    __slots__ = ("items", "nodes", "size")

    def __init__(self) -> None:
        self.nodes = 0
        self.items = 0
        self.size = 0

    def conditions(self, path: str, count: int, *, ahead: bool = False) -> None:
        """Count ``count`` conditions (or, ``ahead``, only check that they would fit)."""
        if self.nodes + count > MAX_NODES:
            raise FilterError(f"{path}: more than {MAX_NODES} conditions in one filter")
        if not ahead:
            self.nodes += count

    def list_items(self, path: str, count: int) -> None:
        self.items += count
        if self.items > MAX_LIST_ITEMS:
            raise FilterError(f"{path}: more than {MAX_LIST_ITEMS} items in __in/__nin lists")

    def scalar(self, path: str, value: Any) -> None:
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise FilterError(f"{path}: a string longer than {MAX_STRING} characters")
            self.size += len(value) + 3
        else:
            self.size += 8
        if self.size > MAX_BYTES:
            raise FilterError(f"{path}: filter over {MAX_BYTES} bytes")

    @property
    def cost(self) -> int:
        """About how many bytes the compiled filter holds."""
        return 800 * self.nodes + 64 * self.items + self.size


def _check_operand(path: str, op: str, operand: Any, budget: _Budget) -> None:
    if op in ("in", "nin"):
        if not isinstance(operand, list | tuple):
            raise FilterError(f"{path}: '__{op}' needs a list of scalars, got {_show(operand)}")
        # Before looking at the items: a huge list is refused without walking it.
        budget.list_items(path, len(operand))
        for item in operand:
            if not isinstance(item, _SCALARS):
                raise FilterError(f"{path}: '__{op}' needs a list of scalars, got {_show(item)}")
            budget.scalar(path, item)
        return
    if op in ("icontains", "startswith"):
        if not isinstance(operand, str):
            raise FilterError(f"{path}: '__{op}' needs a string, got {_show(operand)}")
    elif op == "exists":
        if not isinstance(operand, bool):
            raise FilterError(f"{path}: '__exists' needs true or false, got {_show(operand)}")
    elif not isinstance(operand, _SCALARS):
        raise FilterError(f"{path}: '__{op}' needs a string, number, boolean or null")
    budget.scalar(path, operand)


_KNOWN = ", ".join(f"__{op}" for op in [*_OPERATORS, "exists"])


def _field(key: str, operand: Any, path: str, budget: _Budget) -> Predicate:
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
    _check_operand(path, op, operand, budget)
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


def _compile(spec: Any, path: str, depth: int, budget: _Budget) -> Predicate:
    if depth > MAX_DEPTH:
        raise FilterError(f"{path}: nested more than {MAX_DEPTH} levels")
    if not isinstance(spec, Mapping):
        raise FilterError(f"{path}: a filter is an object, got {type(spec).__name__}")
    if not spec:
        raise FilterError(f"{path}: an empty filter matches everything; pass no filter instead")
    budget.conditions(path, len(spec))
    predicates: list[Predicate] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"{path}: keys are strings, got {_show(key)}")
        budget.scalar(path, key)
        here = f"{path}.{key}"
        if key in ("all", "any"):
            if not isinstance(value, list | tuple) or not value:
                raise FilterError(f"{here}: needs a non-empty list of filters")
            # Each item holds at least one condition: refuse a huge list before compiling it.
            budget.conditions(here, len(value), ahead=True)
            parts = [
                _compile(item, f"{here}[{i}]", depth + 1, budget) for i, item in enumerate(value)
            ]
            predicates.append(_all(parts) if key == "all" else _any(parts))
        elif key == "not":
            predicates.append(_not(_compile(value, here, depth + 1, budget)))
        else:
            predicates.append(_field(key, value, here, budget))
    return predicates[0] if len(predicates) == 1 else _all(predicates)


def _all(parts: list[Predicate]) -> Predicate:
    return lambda state: all(p(state) for p in parts)


def _any(parts: list[Predicate]) -> Predicate:
    return lambda state: any(p(state) for p in parts)


def _not(inner: Predicate) -> Predicate:
    return lambda state: not inner(state)


def _compile_counted(spec: Any) -> tuple[Predicate, int]:
    budget = _Budget()
    return _compile(spec, "filter", 0, budget), budget.cost


def compile_filter(spec: Any) -> Predicate | None:
    """Compile filter data (or None) into a predicate over a session's state.

    Raises FilterError for malformed data and for a filter over one of the limits.
    """
    if spec is None:
        return None
    return _compile_counted(spec)[0]


def validate_filter(spec: Any) -> None:
    """Raise FilterError if ``spec`` is not a valid filter."""
    compile_filter(spec)


class CacheInfo(NamedTuple):
    """What the compiled-filter cache holds: filters, and about how many bytes for them."""

    entries: int
    cost: int


# Compiled filters by their JSON, least recently used first, with their cost. Fan-out runs on
# the event loop, but a process-local channel fans out in the publisher's thread: hence a lock.
_cache: dict[str, tuple[Predicate, int]] = {}
_cache_cost = 0
_cache_lock = threading.Lock()


def cached_filter(spec: Any) -> Predicate | None:
    """``compile_filter`` through a bounded cache keyed by the filter's JSON.

    For filters that arrive with events: the same filter data is compiled once per process, not
    once per event. Raises FilterError like ``compile_filter`` (refusals are not cached).
    """
    global _cache_cost
    if spec is None:
        return None
    try:
        key = json.dumps(spec, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FilterError(f"filter: not JSON data ({_show(str(exc))})") from None
    with _cache_lock:
        found = _cache.pop(key, None)
        if found is not None:
            _cache[key] = found  # now the most recently used
            return found[0]
    predicate, cost = _compile_counted(spec)
    with _cache_lock:
        while _cache and (len(_cache) >= CACHE_SIZE or _cache_cost + cost > CACHE_BYTES):
            _cache_cost -= _cache.pop(next(iter(_cache)))[1]
        if key not in _cache:
            _cache[key] = (predicate, cost)
            _cache_cost += cost
    return predicate


def filter_cache_info() -> CacheInfo:
    """How many compiled filters the cache holds, and about how many bytes for them."""
    with _cache_lock:
        return CacheInfo(len(_cache), _cache_cost)


def clear_filter_cache() -> None:
    """Empty the compiled-filter cache."""
    global _cache_cost
    with _cache_lock:
        _cache.clear()
        _cache_cost = 0
