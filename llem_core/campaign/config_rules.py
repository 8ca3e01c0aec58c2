"""Value rules shared by the config models: byte sizes, cron expressions, numbers that are numbers.

Each rule raises ``ValueError`` with a reason that reads well after ``file: field.path:``.
They exist because what ``llem validate`` accepts must also build a DAG and run: a value
that passes here and breaks later (a timedelta overflow, an unparseable size, a cron
that never fires) would break DAG building for every campaign of the folder.
"""

from __future__ import annotations

import re
import types
from datetime import datetime
from typing import Annotated, Any, Union, get_args, get_origin

# Docker's units are binary: 1k = 1024 bytes (docker run --shm-size, docker-py parse_bytes).
# Units k, m, g with an optional b, as Docker writes them.
_SIZE = re.compile(r"^([0-9]{1,16})\s*([kmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
MAX_SHM_BYTES = 2**40  # 1 TiB: more is a typo
SIZE_GRAMMAR = "an integer of bytes, or an integer with a unit k, m or g (binary), e.g. 512m, 2g"

CRON_PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
                "@annually", "@continuous")


def parse_size(value: str | int) -> int:
    """'512m' -> 536870912, '2g' -> 2147483648, '2gb' -> 2147483648, 1073741824 -> same."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size ({SIZE_GRAMMAR}), got a boolean")
    text = str(value).strip()
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size: expected {SIZE_GRAMMAR}")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 0 < n <= MAX_SHM_BYTES:
        raise ValueError(f"{text!r} must be between 1 byte and 1024g")
    return n


def check_cron(value: str) -> str:
    """A preset, or a 5- or 6-field cron expression croniter (Airflow's parser) accepts and
    that fires at least once."""
    if value.startswith("@"):
        if value not in CRON_PRESETS:
            raise ValueError(f"unknown preset {value!r}; use one of {', '.join(CRON_PRESETS)}")
        return value
    if len(value.split()) not in (5, 6):
        raise ValueError(f"{value!r} is neither a 5-field cron expression nor a preset")
    from croniter import CroniterBadDateError, CroniterError, croniter

    try:
        it = croniter(value, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{value!r} is not a valid cron expression: {exc}") from None
    try:
        it.get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{value!r} never fires (no such date)") from None
    return value


def _leaves(annotation: Any) -> list[Any]:
    """The types an annotation can hold, through unions, Optional and Annotated."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [leaf for a in get_args(annotation) for leaf in _leaves(a)]
    return [annotation]


def _numeric_slots(annotation: Any) -> tuple[bool, tuple[Any, ...]]:
    """(a bool here sneaks into a number, the item annotations of list members)."""
    leaves = _leaves(annotation)
    numeric = any(leaf in (int, float) for leaf in leaves)
    takes_bool = any(leaf is bool or leaf is Any for leaf in leaves)
    items = tuple(get_args(leaf)[0] for leaf in leaves
                  if get_origin(leaf) is list and get_args(leaf))
    return numeric and not takes_bool, items


def bool_as_number(annotation: Any, value: Any) -> bool:
    """True when ``value`` holds a YAML true/false where ``annotation`` wants a number:
    pydantic would read it as 1/0 (``cycles: true`` would run one cycle)."""
    if isinstance(value, bool):
        return _numeric_slots(annotation)[0]
    if isinstance(value, list):
        items = _numeric_slots(annotation)[1]
        return any(bool_as_number(t, v) for t in items for v in value)
    return False


def non_finite(value: Any) -> bool:
    """True when a free value (e.g. ``extra``) holds inf or nan anywhere."""
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(non_finite(v) for v in value)
    return False


def unordered_kind(value: Any) -> str | None:
    """The kind of a set (YAML ``!!set``) or bytes (``!!binary``) inside a free value:
    a set's order changes with each process's hash seed, and with it the config hash."""
    if isinstance(value, set | frozenset | bytes | bytearray):
        return "a set" if isinstance(value, set | frozenset) else "binary data"
    if isinstance(value, dict):
        return next(filter(None, (unordered_kind(v) for v in value.values())), None)
    if isinstance(value, list):
        return next(filter(None, (unordered_kind(v) for v in value)), None)
    return None

