"""One depth rule for every value runyard stores now and serves later.

A value a client or a pipeline hands over (run input and metadata, session
metadata, memory messages, ``ctx.emit`` data, a pipeline's output; step
results, answers and store values when they come) is served inside bigger
documents: input inside a snapshot inside a page of runs
(``{"runs": [{"input": v}]}``), a message inside a session
(``{"history": [{"content": v}]}``), output inside the snapshot and inside
the ``end`` event in a page of events (``{"events": [{"data": {"output":
v}}]}``). orjson, which encodes every answer, refuses a document nested more
than ``ORJSON_MAX_DEPTH`` containers deep (measured with orjson 3.13: 254
nested lists encode, 255 raise "Recursion limit reached"). Checked on its
own, a value 254 deep passed, then every read of a document holding it
failed (issue 10).

The rule: a value nests at most ``MAX_DEPTH`` = 128 arrays and objects. The
deepest wrapper the API puts around a value today is 4 levels (output in a
page of events, above), so 254 - 128 - 4 = 122 levels are left for every
wrapper to come (a protocol adapter's envelope around a snapshot, say); real
JSON nests a handful of levels (serde_json's default limit is 128 too).

Why a limit checked once, where a value enters, rather than encoders without
a recursion limit: every answer, event and SSE frame is encoded by orjson
(stdlib ``json``, whose limit is Python's recursion limit, measured 23x
slower on a snapshot and 40x on a tick event), and every client parses with
limits of its own (orjson 1,024 levels, Python's ``json`` about 1,000). A
value refused with a clear message when it is submitted (422, or the
pipeline's ``ValueError``) keeps every later encoder and parser within its
limits, at the cost of a short walk of the value.
"""

from __future__ import annotations

from typing import Any

import orjson

ORJSON_MAX_DEPTH = 254  # containers orjson encodes within one another (tests pin it)
MAX_DEPTH = 128  # what a submitted value may nest; the rest is the wrappers' margin
# Items a value's walk looks at in Python before orjson (in C) settles the
# rest. A typical value never gets there (a tick's dict of 4 strings and
# numbers: 0.4-0.9 µs); a list of 1,000 small dicts takes 0.04-0.09 ms that
# way instead of 1.3 ms walked in Python (timeit, 2 shared cores).
WALK_BUDGET = 256

_CONTAINERS = (dict, list, tuple)
_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)  # a set lookup first: 3x faster than isinstance on the event path


class NestedTooDeep(ValueError):
    """A value nests more arrays and objects than ``MAX_DEPTH``."""


def check_depth(value: Any, what: str) -> None:
    """``NestedTooDeep`` if ``value`` (``what`` names it in the message) nests
    deeper than ``MAX_DEPTH``; values orjson cannot encode at all are left to
    whatever encodes them, which says why."""
    if type(value) is dict and _SCALAR_TYPES.issuperset(map(type, value.values())):
        return  # an object of plain values, as most events' data is: looked at in C
    if not _fits(value):
        raise NestedTooDeep(
            f"{what} is nested more than {MAX_DEPTH} levels deep (arrays and objects within one another);"
            f" runyard stores and serves values at most {MAX_DEPTH} levels deep"
        )


def _fits(value: Any) -> bool:
    walked = _walk(value, WALK_BUDGET)
    return _fits_when_wrapped(value) if walked is None else walked


def _walk(value: Any, budget: int | None) -> bool | None:
    """Whether ``value`` is at most ``MAX_DEPTH`` deep, walked in Python; None once
    ``budget`` items were looked at, or at a type other than JSON's (a dataclass,
    say), which orjson then settles. Without a budget, such a type is a leaf."""
    if type(value) in _SCALAR_TYPES:
        return True
    if not isinstance(value, _CONTAINERS):
        return None if budget is not None else True
    pending: list[tuple[Any, int]] = [(value, 1)]
    examined = 0
    while pending:
        container, depth = pending.pop()
        if depth > MAX_DEPTH:
            return False
        children = container.values() if isinstance(container, dict) else container
        examined += len(children)
        if budget is not None and examined > budget:
            return None
        for child in children:
            if type(child) in _SCALAR_TYPES:
                continue
            if isinstance(child, _CONTAINERS):
                pending.append((child, depth + 1))
            elif budget is not None and not isinstance(child, _SCALARS):  # a str or int subclass is a scalar
                return None
    return True


def _fits_when_wrapped(value: Any) -> bool:
    """Whether orjson still encodes ``value`` under as many levels as ``MAX_DEPTH``
    leaves for wrappers: exactly when it is at most ``MAX_DEPTH`` deep."""
    wrapped = value
    for _ in range(ORJSON_MAX_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            # deeper than orjson goes, or not JSON at all (whose encoder will say
            # so): only a whole walk tells which (rare: nothing valid gets here)
            return _walk(value, None) is not False
        return False
    return True
