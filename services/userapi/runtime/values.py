"""What every JSON value this API stores or sends on must satisfy: a strict parse, and strings,
keys and nesting that nothing downstream chokes on. No web framework: the request body reader
(runtime/body.py), the request field types (runtime/fields.py), the profile cache and
auth0-events all judge values with these.

Python's json module accepts what no store downstream takes: NaN and ±Infinity (Auth0's request
cannot be encoded), 1e400 (read as Infinity), U+0000 (PostgreSQL text and JSONB cannot hold it),
lone surrogates such as "\\ud800" (no UTF-8 encoding exists: neither httpx, asyncpg nor the
response can send them), and nesting deep enough to raise RecursionError while parsing, or to
exceed pydantic's serialization depth (about 255) when the response is rendered. Each of those
was a 500, some after Auth0 had already been changed. Here each is a 400 (a body over the size
bound is the middleware's 413), before the first external call.

Limits (docs/architecture.md, "Request bodies"):
- MAX_DEPTH: no body nests arrays and objects more than 32 levels.
- Metadata (user_metadata, app_metadata, preferences): at most METADATA_MAX_BYTES of JSON and
  METADATA_MAX_DEPTH levels (the metadata object itself is level 1). Auth0 allows 16 MB per user
  but names 16 kB as the practical upper limit for performance; a profile carries its metadata
  into every token, cache entry and response. Auth0 metadata keys may not contain '.' or '$'.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from userapi.runtime.errors import bad_request

MAX_DEPTH = 32
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 16

# A JSON string token (unrolled, so a long string is one linear match), and what is not a bracket.
# An unterminated string runs to the end of the text: a closing quote required there would make
# the search fail at each later quote and start again from the next, quadratic in the body
# ('"\\"' repeated: 80 kB took half a minute).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# U+0000 and the surrogate code points: nothing downstream can store or encode them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_CHARACTER = "strings and keys may not contain U+0000 or unpaired surrogates"


def _nesting(text: str) -> int:
    """How deep `text` nests, counted without parsing it (so without recursing)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{literal} is out of range for a number")
    return value


def parse(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """One strict JSON document: UTF-8, no NaN or Infinity, at most `max_depth` levels."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The body is not UTF-8.") from None
    if not text.strip():
        raise bad_request("The body is empty.")
    if _nesting(text) > max_depth:
        raise bad_request(f"The body nests deeper than {max_depth} levels.", error="too_deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except ValueError as exc:  # JSONDecodeError included; the int digit limit too
        raise bad_request(f"The body is not valid JSON: {exc}") from None


def unstorable(value: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """Where `value` holds what nothing downstream can store (a string or key with U+0000 or a
    lone surrogate) or nests deeper than `max_depth`, and which of the two: a path such as
    `user_metadata.a[3]`, or None when it is clean. Iterative: any depth is walked safely."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return path or "body", UNSTORABLE_CHARACTER
        elif isinstance(item, dict):
            if depth > max_depth:
                return path or "body", f"nests deeper than {max_depth} levels"
            for key, child in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return (path + "." if path else "") + repr(key), UNSTORABLE_CHARACTER
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                return path or "body", f"nests deeper than {max_depth} levels"
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    return None


def check_storable(value: Any) -> None:
    problem = unstorable(value)
    if problem is not None:
        where, reason = problem
        raise bad_request(f"{where}: {reason}.", error="unstorable_value")


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON, as Auth0 and PostgreSQL would store it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
