"""Generate docs/configuration.md's reference tables: the settings, from `Settings` (each
field's description and default, one table per `# Section ---` comment of
services/userapi/platform/settings.py), and the Helm values, from values.yaml's `# --` comments
(manifests/values_docs.py).

    python -m manifests.reference_docs          # rewrite the tables (make manifests)
    python -m manifests.reference_docs --check  # exit 1 if one is stale or a value undocumented

A settings table lives between `<!-- settings: Section -->` and `<!-- /settings -->`, the
values table between `<!-- values-table:start -->` and `<!-- values-table:end -->`; the prose
around them is hand-written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from userapi.platform import settings as settings_module
from userapi.platform.settings import Settings

from manifests import values_docs

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "configuration.md"
_SECTION = re.compile(r"^    # (?P<title>[A-Z][\w ]*?) -{3,}$")
_FIELD = re.compile(r"^    (?P<name>[a-z_0-9]+): ")
_BLOCK = re.compile(r"(<!-- settings: (?P<title>[^>]+?) -->\n).*?(<!-- /settings -->)", re.S)


def sections() -> dict[str, list[str]]:
    """Section title -> its settings' names, in the order settings.py declares them."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in Path(settings_module.__file__).read_text(encoding="utf-8").splitlines():
        if match := _SECTION.match(line):
            current = found.setdefault(match["title"], [])
        elif (match := _FIELD.match(line)) and match["name"] in Settings.model_fields:
            if current is None:
                raise ValueError(f"{match['name']} is declared before any section comment")
            current.append(match["name"])
    return found


def _shown_default(field: FieldInfo) -> str:
    extra: Any = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def table(names: list[str]) -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name in names:
        field = Settings.model_fields[name]
        if not field.description:
            raise ValueError(f"Settings.{name} has no description")
        rows.append(f"| `{name.upper()}` | {_shown_default(field)} | {field.description} |")
    return "\n".join(rows) + "\n"


def render(document: str) -> str:
    """`document` with every settings block regenerated; every section must have one."""
    wanted = sections()
    seen: set[str] = set()

    def block(match: re.Match[str]) -> str:
        title = match["title"]
        if title not in wanted:
            raise ValueError(f"configuration.md has a block for unknown section {title!r}")
        seen.add(title)
        return match.group(1) + table(wanted[title]) + match.group(3)

    rendered = _BLOCK.sub(block, document)
    if missing := set(wanted) - seen:
        raise ValueError(f"configuration.md has no settings block for: {sorted(missing)}")
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a table is stale")
    args = parser.parse_args(argv)
    missing = values_docs.undocumented(values_docs.VALUES.read_text(encoding="utf-8"))
    if missing:
        print("values without a `# --` comment:", *missing, sep="\n  ", file=sys.stderr)
        return 1
    current = CONFIGURATION.read_text(encoding="utf-8")
    rendered = values_docs.render(render(current))
    if rendered == current:
        return 0
    if args.check:
        print("docs/configuration.md: tables are stale (run `make manifests`)", file=sys.stderr)
        return 1
    CONFIGURATION.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
