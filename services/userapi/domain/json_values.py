"""What every JSON value this API stores or sends on must satisfy: a strict parse, and strings,
keys and nesting that nothing downstream chokes on. No web framework: the request body reader
(web/request_body.py), the request field types (domain/user_fields.py), the profile cache and
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
import math
import re
from itertools import accumulate
from typing import Any

from userapi.platform.errors import APIError, bad_request

MAX_DEPTH = 32
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 16

# A JSON string token (unrolled, so a long string is one linear match), and what is not a bracket.
# An unterminated string runs to the end of the text: a closing quote required there would make
# the search fail at each later quote and start again from the next, quadratic in the body
# ('"\\"' repeated: 80 kB took half a minute).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Each match ends at one bracket or comma outside strings, or at the end of the body: the regex
# engine skips strings and everything else, so _element_spans' loop sees only what it counts.
# Possessive, and ending at \Z when nothing is left, so no match is ever tried twice.
_STRUCTURE = re.compile(
    rb'(?:[^"\[\]{},]++|' + _STRING.pattern.encode() + rb")*+([\[\]{},]|\Z)", re.DOTALL
)
_JSON_SPACE = b" \t\n\r"
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# U+0000 and the surrogate code points: nothing downstream can store or encode them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_CHARACTER = "strings and keys may not contain U+0000 or unpaired surrogates"


def _deeper_than(text: str, max_depth: int) -> bool:
    """Whether `text` nests more than `max_depth` levels, counted without parsing it (so
    without recursing)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # it cannot: most bodies, and most elements of a delivery
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > max_depth


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{literal} is out of range for a number")
    return value


# One decoder, not one per call (json.loads with options builds a new one each time): a delivery
# read element by element calls parse() once per unreadable element.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def parse(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """One strict JSON document: UTF-8, no NaN or Infinity, at most `max_depth` levels."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The body is not UTF-8.") from None
    if not text.strip():
        raise bad_request("The body is empty.")
    if _deeper_than(text, max_depth):
        raise bad_request(f"The body nests deeper than {max_depth} levels.", error="too_deep")
    try:
        return _DECODER.decode(text)
    except ValueError as exc:  # JSONDecodeError included; the int digit limit too
        raise bad_request(f"The body is not valid JSON: {exc}") from None


def _element_spans(raw: bytes) -> list[tuple[int, int]] | None:
    """Where each element of `raw` lies when `raw` is one JSON array, or None when it is not
    (brackets that never close, anything but whitespace around it). Brackets and strings are
    told apart as _deeper_than tells them, so any depth costs one counter, never a recursion."""
    spans: list[tuple[int, int]] = []
    depth, begin, end = 0, -1, -1
    for match in _STRUCTURE.finditer(raw):
        char, position = match[1], match.start(1)
        if not char or end >= 0:  # the end of the body, or anything after the array closed
            if char:
                return None
            break
        if depth == 0:
            if char != b"[" or raw[:position].strip(_JSON_SPACE):
                return None
            depth, begin = 1, position + 1
        elif char == b",":
            if depth == 1:
                spans.append((begin, position))
                begin = position + 1
        elif char in (b"[", b"{"):
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                if char != b"]":
                    return None
                spans.append((begin, position))
                end = position + 1
    if end < 0 or raw[end:].strip(_JSON_SPACE):
        return None
    if len(spans) == 1 and not raw[begin : end - 1].strip(_JSON_SPACE):
        return []  # []
    return spans


def _read_alone(element: bytes, max_depth: int) -> Any:
    try:
        # Without the whitespace around it, so that a reason's line and column are its own.
        return parse(element.strip(_JSON_SPACE), max_depth)
    except APIError as exc:
        # A copy never raised: a million refusals must not keep a million tracebacks.
        return APIError(exc.status, exc.error, exc.message)


def _read_run(raw: bytes, spans: list[tuple[int, int]], max_depth: int) -> list[Any] | None:
    """The elements in `spans`, read together as one array (one level deeper than each), or
    None when the run does not read. A run of one is read alone and always answers."""
    if len(spans) == 1:
        return [_read_alone(raw[spans[0][0] : spans[0][1]], max_depth)]
    try:
        run: list[Any] = parse(b"[" + raw[spans[0][0] : spans[-1][1]] + b"]", max_depth + 1)
    except APIError:
        return None
    return run


def array_elements(raw: bytes, max_depth: int = MAX_DEPTH) -> list[Any] | None:
    """When `raw` is one JSON array, each element as `parse` reads it on its own: its value, or
    the APIError `parse` raised for it (an element may nest `max_depth` levels, as a body may).
    None when `raw` is not one array: then nothing in it can be told apart.

    Runs of elements are read together, each run twice the last while they read; a run that
    fails is read again in chunks of about its square root, and a chunk that fails element by
    element. So no byte is read more than three times (linear in the body), and an array of
    millions of small elements with one bad one costs thousands of reads, not millions."""
    spans = _element_spans(raw)
    if spans is None:
        return None
    elements: list[Any] = []
    start, size = 0, 1
    while start < len(spans):
        run = spans[start : start + size]
        read = _read_run(raw, run, max_depth)
        if read is None:
            read = []
            step = math.isqrt(len(run))
            for first in range(0, len(run), step):
                chunk = run[first : first + step]
                read += _read_run(raw, chunk, max_depth) or [
                    _read_alone(raw[begin:end], max_depth) for begin, end in chunk
                ]
        elements += read
        start += len(run)
        clean = not any(isinstance(element, APIError) for element in read)
        size = size * 2 if clean else 1
    return elements


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
