"""The values table of docs/configuration.md, from the `# --` comments of the chart's values.yaml.

Written by `python -m manifests.reference_docs` (make manifests), with the settings tables.

helm-docs' comment syntax: `# -- description` directly above a key (continued by the `#` lines
after it, up to the key), and an optional `# @default -- text` that replaces the literal
default. A mapping whose keys carry comments of their own is a section: its row, then one per
key, each of which must be documented. A mapping none of whose keys is commented (resources,
labels, an endpoint's block) is one value, shown whole as its default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "helm" / "userapi" / "values.yaml"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(\s|$)")


@dataclass
class Comment:
    description: str
    default: str | None = None


def comments(text: str) -> dict[tuple[str, ...], Comment]:
    """Each key's `# --` comment, by its path. A blank line or any other line between the
    comment and the key detaches it, as in helm-docs."""
    found: dict[tuple[str, ...], Comment] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    default: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# @default --"):
            default = stripped.removeprefix("# @default --").strip()
        elif stripped.startswith("# --"):
            pending, default = [stripped.removeprefix("# --").strip()], None
        elif stripped.startswith("#") and pending is not None and default is None:
            pending.append(stripped.lstrip("#").strip())
        elif match := KEY.match(line):
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            if pending is not None:
                found[tuple(key for _, key in stack)] = Comment(" ".join(pending), default)
            pending, default = None, None
        elif not stripped.startswith("#"):
            pending, default = None, None
    return found


def _is_section(
    path: tuple[str, ...], value: Any, documented: dict[tuple[str, ...], Comment]
) -> bool:
    return isinstance(value, dict) and any((*path, key) in documented for key in value)


@dataclass
class Row:
    path: tuple[str, ...]
    value: Any
    comment: Comment | None


def rows(values: dict[str, Any], documented: dict[tuple[str, ...], Comment]) -> list[Row]:
    """Every value in file order, sections before their keys; `comment` None: undocumented."""
    found: list[Row] = []

    def walk(mapping: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in mapping.items():
            path = (*prefix, key)
            found.append(Row(path, value, documented.get(path)))
            if _is_section(path, value, documented):
                walk(value, path)

    walk(values, ())
    return found


def _type(value: Any) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "list"}
    return names.get(type(value), "object")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(text: str) -> str:
    documented = comments(text)
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for row in rows(yaml.safe_load(text), documented):
        comment = row.comment or Comment("")
        if _is_section(row.path, row.value, documented):
            default = ""
        elif comment.default is not None:
            default = _cell(comment.default)
        else:
            default = f"`{_cell(json.dumps(row.value, separators=(',', ':')))}`"
        key = ".".join(row.path)
        lines.append(f"| `{key}` | {_type(row.value)} | {default} | {_cell(comment.description)} |")
    return "\n".join(lines)


def undocumented(text: str) -> list[str]:
    documented = comments(text)
    return [".".join(r.path) for r in rows(yaml.safe_load(text), documented) if not r.comment]


def render(document: str) -> str:
    """`document` (docs/configuration.md) with its values table regenerated."""
    before, rest = document.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table(VALUES.read_text(encoding='utf-8'))}\n{END}{after}"
