"""domain/json_values.py's strict reader on the pieces of a JSON array: each element reads exactly
as `parse` reads it alone, whatever its neighbours, and only a body that is one array splits."""

from __future__ import annotations

import random
from typing import Any

import pytest
from userapi.domain import json_values
from userapi.platform.errors import APIError

GOOD = [
    b"1",
    b' "a,]}\\"[{" ',
    b'{"log_id": "x", "data": {"type": "sdu", "n": [1, 2.5, true, null]}}',
    b"[" * 32 + b"]" * 32,  # as deep as a body may be
    b'"\\u00e9\xc3\xa9"',
    b"[]",
    b"{}",
]
BAD = [
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"",
    b"  ",
    b"[" * 33 + b"]" * 33,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": [}]',
    b'"a\x00b"',
    b"\xff",
    b"1 2",
    b"{'a': 1}",
]


def _alone(element: bytes) -> Any:
    try:
        return json_values.parse(element)
    except APIError as exc:
        return (exc.error, exc.message)


def _as_read(elements: list[Any]) -> list[Any]:
    return [(e.error, e.message) if isinstance(e, APIError) else e for e in elements]


@pytest.mark.parametrize("seed", range(24))
def test_each_element_reads_as_it_reads_alone(seed: int) -> None:
    rng = random.Random(seed)
    bad_share = rng.choice([0.0, 0.01, 0.2, 0.9, 1.0])
    pieces = [
        rng.choice(BAD if rng.random() < bad_share else GOOD)
        for _ in range(rng.choice([1, 2, 7, 200]))
    ]
    raw = b" [" + rng.choice([b",", b" ,\n", b",\r\n\t"]).join(pieces) + b"]\n"
    elements = json_values.array_elements(raw)
    assert elements is not None
    if pieces in ([b""], [b"  "]):  # "[ ]": no element at all
        assert elements == []
    else:
        assert _as_read(elements) == [_alone(piece) for piece in pieces]


@pytest.mark.parametrize("bad_every", [None, 1, 2, 100, 10_000])
def test_reading_the_elements_is_linear(monkeypatch, bad_every: int | None) -> None:
    """No byte is read more than three times, and a few bad elements among many small ones
    cost hundreds of reads, not one per element."""
    reads: list[int] = []
    parse = json_values.parse

    def counted(raw: bytes, max_depth: int = json_values.MAX_DEPTH) -> Any:
        reads.append(len(raw))
        return parse(raw, max_depth)

    monkeypatch.setattr(json_values, "parse", counted)
    pieces = [b'{"n": 1}'] * 100_000
    bad = range(31_337, len(pieces), bad_every or len(pieces))
    for index in bad:
        pieces[index] = b'{"n": NaN}'
    raw = b"[" + b",".join(pieces) + b"]"
    elements = json_values.array_elements(raw)
    assert elements is not None
    assert [i for i, e in enumerate(elements) if isinstance(e, APIError)] == list(bad)
    assert elements[0] == {"n": 1}
    assert sum(reads) <= 3 * len(raw) + 2 * len(reads)  # "[" and "]" around a run
    if bad_every is None:
        assert len(reads) < 500, len(reads)
    elif bad_every == 10_000:  # 7 bad elements
        assert len(reads) < 2_000, len(reads)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"1",
        b'{"a": [1, 2]}',
        b"[1, 2",
        b"[1, [2]",
        b"[1] x",
        b"x [1]",
        b"[1] [2]",
        b"[1}",
        b"\x0c[1]",  # not JSON whitespace
        b'[1, "2]',
        b'["' + b'\\"' * 100_000,
        b"[" * 100_000,
        b"]",
    ],
)
def test_a_body_that_is_not_one_array_does_not_split(raw: bytes) -> None:
    assert json_values.array_elements(raw) is None


def test_an_empty_array_has_no_elements() -> None:
    assert json_values.array_elements(b" [ \n ] ") == []
