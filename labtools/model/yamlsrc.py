"""YAML that remembers where each key was: errors in inventories and profiles name the file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from labtools.base.errors import InventoryError


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember each key's line and refuse duplicate keys."""


class LineMap(dict):
    line: int
    key_lines: dict[str, int]


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> LineMap:
    m = LineMap()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        line = knode.start_mark.line + 1
        if key in m:
            raise InventoryError(f"duplicate key {key!r} (first on line {m.key_lines[key]})", loader.name, line)
        m[key] = loader.construct_object(vnode, deep=True)
        m.key_lines[key] = line
    return m


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: str | Path, what: str = "inventory") -> Any:
    """Parse a YAML file whose mappings know their lines; syntax errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InventoryError(f"cannot read {what}: {e.strerror}", str(path)) from None
    loader = LineLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise InventoryError(f"YAML syntax error: {e.problem}", str(path), line) from None
    finally:
        loader.dispose()


def line_of(data: Any, loc: Sequence[object]) -> int | None:
    """The line of the deepest key of `loc` (a pydantic error location) found in `data`."""
    line, node = getattr(data, "line", None), data
    for part in loc:
        if isinstance(node, dict) and part in node:
            line = getattr(node, "key_lines", {}).get(part, line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line
