"""Bounded YAML reading for campaign files: no duplicate keys, no alias bombs, no deep nesting.

``yaml.safe_load`` keeps the last of two equal keys silently, and expands a few lines of
nested aliases ("billion laughs") into a structure that later steps (pydantic, deep copies,
JSON) walk in full. The DAG processor parses every campaign file within a time limit, so
a hostile or careless file must fail fast with a reason instead. The loader here counts,
while composing, the nodes each node stands for once its aliases are expanded, and its
depth, and refuses a document beyond the limits before anything is constructed. Keys and
values that hold control characters (a double-quoted ``"\\0"`` is a NUL) are refused with
their line, before the models check every string again whatever its origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llem_core.campaign.text_rules import text_problem

MAX_FILE_BYTES = 1 << 20  # 1 MiB
MAX_ALIASES = 1000  # merge keys (<<: *defaults) in every experiment stay well below
MAX_NODES = 100_000  # scalars, lists and mappings, with every alias expanded
MAX_DEPTH = 32  # nesting of lists and mappings, aliases expanded
MAX_INT_DIGITS = 1000  # Python refuses to convert over 4300 digits, with a ValueError
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


@dataclass
class YamlProblem(Exception):
    """A document refused before or while it was read; ``where`` is a field path or a line."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class YamlProblems(Exception):
    problems: list[YamlProblem]


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _Measuring:
    """Composer step that measures each node (expanded size and depth) as it is composed."""

    anchors: dict[str, Node]

    def _start_measuring(self) -> None:
        self._depth = 0
        self._aliases = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (size, height)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlProblem(f"line {event.start_mark.line + 1}",
                                  f"more than {MAX_ALIASES} aliases (*name)")
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._measured:
                raise YamlProblem(f"line {event.start_mark.line + 1}",
                                  f"alias *{event.anchor} refers to a node that contains it")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            event = self.peek_event()
            raise YamlProblem(f"line {event.start_mark.line + 1}",
                              f"nested deeper than {MAX_DEPTH} levels")
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._measure(node)
        return node

    def _measure(self, node: Node) -> None:
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        elif node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
            raise YamlProblem(f"line {_line(node)}",
                              f"an integer of more than {MAX_INT_DIGITS} digits")
        size, height = 1, 1
        for child in children:
            s, h = self._measured[id(child)]
            size += s
            height = max(height, h + 1)
        if size > MAX_NODES:
            raise YamlProblem(f"line {_line(node)}",
                              f"holds more than {MAX_NODES} values (aliases expanded)")
        if height > MAX_DEPTH:
            raise YamlProblem(f"line {_line(node)}",
                              f"nested deeper than {MAX_DEPTH} levels (aliases expanded)")
        self._measured[id(node)] = (size, height)


class BoundedLoader(_Measuring, yaml.SafeLoader):
    """Pure-Python SafeLoader with the limits."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start_measuring()


_FastBase: Any = getattr(yaml, "CSafeLoader", None)
if _FastBase is not None:
    class FastBoundedLoader(_Measuring, Composer, _FastBase):  # type: ignore[misc,valid-type]
        """libyaml scans and parses (a 1 MiB file in well under a second instead of
        seconds); composing, and so measuring, stays in Python."""

        def __init__(self, stream: str) -> None:
            _FastBase.__init__(self, stream)
            Composer.__init__(self)
            self._start_measuring()

    LOADER: type = FastBoundedLoader
else:
    LOADER = BoundedLoader


def _key_text(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else f"(key at line {_line(node)})"


def duplicate_keys(root: Node) -> list[YamlProblem]:
    """Every mapping key written twice in one mapping, named by its field path."""
    problems: list[YamlProblem] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: str) -> None:
        if id(node) in seen_nodes:  # an alias: its target was checked where it was written
            return
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                walk(child, f"{path}[{i}]")
        elif isinstance(node, MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    continue
                name = _key_text(key)
                child_path = f"{path}.{name}" if path else name
                if isinstance(key, ScalarNode):
                    ident = (key.tag, str(key.value))
                    if ident in first:
                        problems.append(YamlProblem(child_path, (
                            f"duplicate key (lines {first[ident]} and {_line(key)}); "
                            "YAML would silently keep only the last")))
                    else:
                        first[ident] = _line(key)
                walk(value, child_path)

    walk(root, "")
    return problems


def text_problems(root: Node, limit: int = 20) -> list[YamlProblem]:
    """Keys and values holding a character no campaign text may hold (NUL, other controls,
    bidirectional overrides: :mod:`llem_core.campaign.text_rules`), each named by its field path and
    line. TAB and LF pass here (block scalars hold them); the field's model decides."""
    problems: list[YamlProblem] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack and len(problems) < limit:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, ScalarNode):
            problem = text_problem(str(node.value), prose=True)
            if problem:
                problems.append(YamlProblem(path or "(top level)",
                                            f"line {_line(node)}: {problem}"))
        elif isinstance(node, SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(
                enumerate(node.value))))
        elif isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                name = _key_text(key)
                child_path = f"{path}.{name}" if path else name
                if isinstance(key, ScalarNode):
                    problem = text_problem(str(key.value), prose=True)
                    if problem:
                        problems.append(YamlProblem(child_path, f"line {_line(key)}: the key "
                                                                f"{key.value!r} {problem}"))
                        continue
                stack.append((value, child_path))
    return problems


def count_values(obj: Any) -> int:
    """Scalars, lists and mappings in ``obj``, keys included (bounded data only)."""
    if isinstance(obj, dict):
        return 1 + sum(count_values(k) + count_values(v) for k, v in obj.items())
    if isinstance(obj, list):
        return 1 + sum(count_values(v) for v in obj)
    return 1


def data_problem(data: Any) -> YamlProblem | None:
    """The same size and depth limits on already-parsed data (e.g. from ``yaml.safe_load``,
    whose aliases become shared objects): shared objects count once per use, cycles fail."""
    measured: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def measure(obj: Any, depth: int) -> tuple[int, int]:
        if not isinstance(obj, dict | list):
            return 1, 1
        if id(obj) in measured:
            return measured[id(obj)]
        if id(obj) in active:
            raise YamlProblem("(top level)", "a value contains itself (recursive alias)")
        if depth > MAX_DEPTH:
            raise YamlProblem("(top level)", f"nested deeper than {MAX_DEPTH} levels")
        active.add(id(obj))
        children = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else obj
        size, height = 1, 1
        for child in children:
            s, h = measure(child, depth + 1)
            size, height = size + s, max(height, h + 1)
            if size > MAX_NODES:
                raise YamlProblem("(top level)", f"holds more than {MAX_NODES} values")
        if height > MAX_DEPTH:
            raise YamlProblem("(top level)", f"nested deeper than {MAX_DEPTH} levels")
        active.discard(id(obj))
        measured[id(obj)] = (size, height)
        return size, height

    try:
        measure(data, 1)
    except YamlProblem as exc:
        return exc
    return None


def load_bounded(text: str, loader: type | None = None) -> Any:
    """Parse one YAML document within the limits; raise YamlProblems or yaml.YAMLError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise YamlProblems([YamlProblem("(file)", f"larger than {MAX_FILE_BYTES} bytes")])
    loader = (loader or LOADER)(text)
    try:
        try:
            root = loader.get_single_node()
        except YamlProblem as exc:
            raise YamlProblems([exc]) from None
        except RecursionError:
            raise YamlProblems([YamlProblem("(yaml)", "nested too deeply")]) from None
        if root is None:
            return None
        problems = duplicate_keys(root) + text_problems(root)
        if problems:
            raise YamlProblems(problems)
        return loader.construct_document(root)
    finally:
        loader.dispose()

