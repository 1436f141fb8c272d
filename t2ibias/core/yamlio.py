"""YAML loading that remembers where each value came from, so errors can say ``file:line``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from t2ibias.core.errors import UserError

Path_ = tuple[Any, ...]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
#: Most values aliases may add to one file (an alias adds every value of the node it repeats).
#: Shared template or label lists stay far below it; a "billion laughs" file, whose nested
#: aliases multiply a few bytes into billions of values, is refused at its first lines.
ALIAS_VALUE_BUDGET = 10_000


class LocatedYAML:
    """Parsed YAML data plus the 1-based line of every mapping key and sequence item."""

    def __init__(self, path: Path, data: Any, lines: dict[Path_, int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line(self, *keys: Any) -> int:
        """The line of ``data[k0][k1]...``, or of its nearest located parent."""
        for end in range(len(keys), -1, -1):
            if keys[:end] in self._lines:
                return self._lines[keys[:end]]
        return 1

    def where(self, *keys: Any) -> str:
        return f"{self.path}:{self.line(*keys)}"


def _walk(path: Path, node: yaml.Node, prefix: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if isinstance(key_node, yaml.ScalarNode):
                if key in seen:
                    # PyYAML keeps the last value silently: a repeated template or family would vanish
                    raise UserError(f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r} (remove or rename one)")
                seen.add(key)
            lines[prefix + (key,)] = key_node.start_mark.line + 1
            _walk(path, value_node, prefix + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            _walk(path, item, prefix + (i,), lines)


def _check_aliases(path: Path, text: str) -> None:
    """Refuse recursive aliases and aliases that expand past :data:`ALIAS_VALUE_BUDGET`.

    One pass over the parser's events, before anything is built: each anchor's size is counted
    once, each alias adds the size of what it repeats.
    """
    if "*" not in text:  # no alias can occur
        return
    sizes: dict[str, int] = {}
    frames: list[list[Any]] = []  # [anchor, values so far] of each open mapping or sequence
    added = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            if any(anchor == event.anchor for anchor, _ in frames):
                raise UserError(f"{path}:{line}: alias *{event.anchor} sits inside the node &{event.anchor} it repeats "
                                "(a recursive alias has no end; write the value out instead)")
            n = sizes.get(event.anchor)
            if n is None:
                continue  # an undefined alias: composing reports it
            added += n
            if added > ALIAS_VALUE_BUDGET:
                raise UserError(f"{path}:{line}: aliases expand to more than {ALIAS_VALUE_BUDGET:,} values here "
                                f"(*{event.anchor} repeats {n:,}; nested aliases multiply), so the file is not read "
                                "(write the values out, or alias fewer or smaller nodes)")
            if frames:
                frames[-1][1] += n
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                sizes[event.anchor] = 1
            if frames:
                frames[-1][1] += 1
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            frames.append([event.anchor, 1])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, n = frames.pop()
            if anchor:
                sizes[anchor] = n
            if frames:
                frames[-1][1] += n


def load_located_yaml(path: str | Path) -> LocatedYAML:
    """Parse a YAML file; a syntax error, a recursive alias or an alias bomb becomes one
    ``file:line: ...`` UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (check the path)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read file ({exc})") from None
    try:
        _check_aliases(path, text)
        loader = _Loader(text)  # parse once: the node tree gives lines, the same tree gives data
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{line}: invalid YAML: {problem} (fix the syntax on that line)") from None
    lines: dict[Path_, int] = {}
    if node is not None:
        _walk(path, node, (), lines)
    return LocatedYAML(path, data, lines)
