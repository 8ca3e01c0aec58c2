"""Characters no campaign text may hold, checked in every string a config model holds.

Campaign text ends up in PostgreSQL (the serialized DAG's JSONB, import errors), in result
files, in logs and on pages. PostgreSQL refuses NUL in text and JSONB, and a lone UTF-16
surrogate in JSONB: one such DAG failed the dag-processor's whole transaction, so every
campaign's DAG disappeared without an error. Other characters do no harm to a database but
make text read as something else: C0/C1 controls (terminal escapes, a carriage return that
overwrites a log line), line and paragraph separators (U+2028/2029: a new line to some
readers and not others) and bidirectional embeddings, overrides and isolates
(U+202A-202E, U+2066-2069: "Trojan Source" text shown in an order other than stored).

Refused everywhere: U+0000-001F, U+007F-009F, U+2028-2029, U+202A-202E, U+2066-2069 and
lone surrogates (U+D800-DFFF). A field that holds free prose (a campaign's
``description``) may also hold TAB and LF, which YAML block scalars produce. Letters of
every script, zero-width joiners (emoji, Persian) and ordinary punctuation stay allowed.

:class:`TextChecked` is the base of ``config_base.Strict``, the one strict base of
every config model (the engines' sections included): one rule for every string of every
field, dict keys, list items and nested free metadata (``extra``) included, so a field
added later is covered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationInfo, field_validator

REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# The same less TAB and LF: free prose, and the YAML layer (which does not know the field).
REFUSED_IN_PROSE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_REASON = ("campaign text may not hold control characters, line or paragraph separators, "
           "bidirectional overrides or lone surrogates (the metadata database refuses some; "
           "the others show text as something it is not)")


def _named(char: str) -> str:
    return f"U+{ord(char):04X}"


def text_problem(text: str, prose: bool = False) -> str | None:
    """Why ``text`` may not be campaign text, or None (``prose``: TAB and LF allowed)."""
    found = (REFUSED_IN_PROSE if prose else REFUSED).search(text)
    if found is None:
        return None
    return f"holds {_named(found.group())} at character {found.start() + 1}: {_REASON}"


def _strings(value: Any) -> Iterator[tuple[str, str, bool]]:
    """(where inside value, the string, whether it is a key) of every string in value; the
    strings of nested config models are theirs to check."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item, False
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    yield where, k, True
                stack.append((f"{where}[{k!r}]", v))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


def value_problem(value: Any, prose: bool = False) -> str | None:
    """The first string inside ``value`` (keys included) that is not campaign text."""
    for where, text, is_key in _strings(value):
        problem = text_problem(text, prose)
        if problem:
            if is_key:
                return f"the key {text!r}{' in ' + where if where else ''} {problem}"
            return f"{where} {problem}" if where else problem
    return None


class TextChecked(BaseModel):
    """Base model whose string fields (at any depth of a field's value) hold no control
    characters; ``prose_fields`` may also hold TAB and LF."""

    prose_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _plain_text(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or isinstance(v, BaseModel | bool | int | float):
            return v
        problem = value_problem(v, prose=info.field_name in cls.prose_fields)
        if problem:
            raise ValueError(problem)
        return v


def shown(text: str) -> str:
    """``text`` with every refused character (and TAB/LF) written as its escape: for error
    lines, which must hold no raw control character and stay one line each."""
    return REFUSED.sub(lambda m: repr(m.group())[1:-1], text)
