"""Property-based check of list-users' `q` allow-list: hypothesis writes Lucene-ish queries
(allowed and hidden fields, operators, escapes, ranges, regular expressions, quotes, groups,
wildcards, odd whitespace) and every query the check accepts is read three more ways, each of
which must search allowed fields only:

- by the emulator's search engine (userapi/emulator/query.py), as the stand-in for Auth0 runs it;
- by a tokenizer written from Lucene's classic query grammar (QueryParser.jj, which
  Elasticsearch's query_string extends and Auth0's search v3 runs): every term followed by `:`
  is a field there, wherever it stands;
- by luqum again, on its own rendering of the tree.

The budget is fixed: a derandomized run of USERAPI_QUERY_FUZZ_EXAMPLES examples (2000 by
default, under 30 s on a busy CI machine). Raise it locally, e.g.
`USERAPI_QUERY_FUZZ_EXAMPLES=100000 pytest tests/integration/test_list_query_fuzzing.py`.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from userapi.domain.user_search import SEARCHABLE_FIELDS, SEARCHABLE_PREFIX, check_query
from userapi.emulator import query as emulator_query
from userapi.emulator.errors import ManagementError
from userapi.platform.errors import APIError

EXAMPLES = int(os.environ.get("USERAPI_QUERY_FUZZ_EXAMPLES", "2000"))

ALLOWED = ["name", "email", "created_at", "user_id", "user_metadata.theme", "nickname"]
HIDDEN = ["app_metadata.secret", "_exists_", "*", "phone_number", "last_ip", "user_metadata",
          "app\\_metadata.secret", "app_metadata.*", "user_metadata.\\*", "email\\:x"]  # fmt: skip
PLAIN = ["x", "Ja*", "*son", "a?c", "ada@example.com", "auth0|64f1", "2024-01-01", "O'Brien",
         "true", "*", '"a b"', '""', '"x\\" app_metadata.secret:s"', "a+b", "a-b", "é"]  # fmt: skip
ODD = ["T10:00:00", "TO", "a&&b", "a||b", "a!b", "a/b", "a\\ b", "a\\:b", "/s.*/", "a~", "a~2",
       "a^2", ">5", "<=5", "a=b", "a\u00a0b", "a\u3000b", "a\"b", "a[b", "a]b", "a:b"]  # fmt: skip
SYNTAX = [" ", "  ", "\t", "\n", "\u3000", "\u00a0", "(", ")", "[", "]", "{", "}", " TO ",
          " AND ", " OR ", " NOT ", "-", "+", "!", "&&", "||", "\\", '"', "/", "~", "^", ":",
          ">", "<", "=", "'", "*", "?", ","]  # fmt: skip


def allowed(field: str) -> bool:
    return field in SEARCHABLE_FIELDS or field.startswith(SEARCHABLE_PREFIX)


# -- what the engines search ---------------------------------------------------------------

WS = " \t\n\r\u3000"  # Lucene's whitespace (QueryParser.jj, _WHITESPACE)
_START = rf'(?:[^{WS}+\-!():^\[\]"{{}}~*?\\/]|\\.)'  # _TERM_START_CHAR
_CHAR = rf"(?:{_START}|[+\-])"  # _TERM_CHAR
DEFAULT_TOKENS = [  # in QueryParser.jj's order, which breaks ties between equal lengths
    ("AND", r"AND|&&"), ("OR", r"OR|\|\|"), ("NOT", r"NOT|!"), ("PLUS", r"\+"),
    ("MINUS", r"-"), ("BAREOPER", rf"[+\-!][{WS}]"), ("LPAREN", r"\("), ("RPAREN", r"\)"),
    ("COLON", r":"), ("STAR", r"\*"), ("CARAT", r"\^"), ("QUOTED", r'"(?:[^"\\]|\\.)*"'),
    ("TERM", rf"{_START}{_CHAR}*"), ("FUZZY_SLOP", rf"~(?:\d+(?:\.\d+)?)?{_CHAR}*"),
    ("PREFIXTERM", rf"\*|{_START}{_CHAR}*\*"), ("WILDTERM", rf"(?:{_START}|[*?])(?:{_CHAR}|[*?])*"),
    ("REGEXPTERM", r"/(?:\\/|[^/])*/"), ("RANGEIN_START", r"\["), ("RANGEEX_START", r"\{"),
]  # fmt: skip
RANGE_TOKENS = [
    ("RANGE_TO", r"TO"), ("RANGEIN_END", r"\]"), ("RANGEEX_END", r"\}"),
    ("RANGE_QUOTED", r'"(?:\\"|[^"])+"'), ("RANGE_GOOP", r"[^ \]}]+"),
]  # fmt: skip
_COMPILED = {
    state: [(kind, re.compile(pattern, re.S)) for kind, pattern in tokens]
    for state, tokens in (("default", DEFAULT_TOKENS), ("range", RANGE_TOKENS))
}


def lucene_fields(q: str) -> list[str] | None:
    """Every field Lucene's classic parser could search in `q` (a term or `*` followed by a
    colon, unescaped), or None when its lexer refuses `q` (then the search is a 400)."""
    tokens: list[tuple[str, str]] = []
    state, position = "default", 0
    while position < len(q):
        if q[position] in WS:
            position += 1
            continue
        if tokens and tokens[-1][0] == "CARAT":  # the Boost state: a number, then default
            number = re.compile(r"\d+(?:\.\d+)?").match(q, position)
            if number is None:
                return None
            tokens.append(("NUMBER", number[0]))
            position = number.end()
            continue
        best: tuple[str, str] | None = None
        for kind, pattern in _COMPILED[state]:
            match = pattern.match(q, position)
            if match is not None and match[0] and (best is None or len(match[0]) > len(best[1])):
                best = (kind, match[0])
        if best is None:
            return None
        tokens.append(best)
        position += len(best[1])
        if best[0] in ("RANGEIN_START", "RANGEEX_START"):
            state = "range"
        elif best[0] in ("RANGEIN_END", "RANGEEX_END"):
            state = "default"
    return [
        re.sub(r"\\(.)", r"\1", text, flags=re.S)
        for (kind, text), following in itertools.pairwise(tokens)
        if kind in ("TERM", "STAR") and following[0] == "COLON"
    ]


def emulator_fields(q: str, monkeypatch: pytest.MonkeyPatch) -> list[str] | None:
    """The fields the emulator's engine searches for `q`, or None when it answers 400."""
    seen: list[str] = []
    check = emulator_query._check_field

    def recording(field_name: str) -> None:
        seen.append(field_name)
        check(field_name)

    with monkeypatch.context() as patch:
        patch.setattr(emulator_query, "_check_field", recording)
        try:
            emulator_query.parse_query(q)
        except ManagementError:
            return None
    return seen


def luqum_fields(q: str) -> list[str]:
    from luqum.parser import parser
    from luqum.tree import SearchField

    def names(node: Any) -> list[str]:
        own = [node.name] if isinstance(node, SearchField) else []
        return own + [name for child in node.children for name in names(child)]

    return names(parser.parse(str(parser.parse(q))))


# -- queries -------------------------------------------------------------------------------

# Mostly what passes, so that many queries reach the property; the rest is the attack surface.
fields = st.sampled_from(ALLOWED * 8 + HIDDEN)
values = st.sampled_from(PLAIN * 6 + ODD)
joins = st.sampled_from([" ", " AND ", " OR ", " AND NOT ", " -", " +"] * 5 + SYNTAX)
ranges = st.builds(
    lambda opening, low, high, closing: f"{opening}{low} TO {high}{closing}",
    st.sampled_from("[{"),
    values,
    values,
    st.sampled_from("]}"),
)
clauses = st.recursive(
    st.one_of(
        st.builds(lambda f, v: f"{f}:{v}", fields, values),
        st.builds(lambda f, r: f"{f}:{r}", fields, ranges),
        st.builds(lambda f, a, b: f"{f}:({a} OR {b})", fields, values, values),
    ),
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a}{op}{b}", inner, joins, inner),
        st.builds(
            lambda prefix, a: f"{prefix}{a}", st.sampled_from(["-", "+", "NOT ", "!"]), inner
        ),
        st.builds(lambda f, a: f"{f}:({a})", fields, inner),
        inner.map(lambda a: f"({a})"),
    ),
    max_leaves=6,
)
soup = st.lists(
    st.one_of(fields.map(lambda f: f + ":"), values, st.sampled_from(SYNTAX)), max_size=12
).map("".join)
queries = st.one_of(
    clauses, clauses, clauses, soup, clauses.flatmap(lambda c: soup.map(lambda s: c + s))
)


@hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@hypothesis.given(q=queries)
def test_an_accepted_query_searches_allowed_fields_only(
    q: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        named = check_query(q)
    except APIError as refused:
        status = refused.status
    else:
        status = 200
    assert status in (200, 400)  # never an unexpected error, so never a 500
    if status == 400:
        return
    assert named
    assert all(allowed(field) for field in named), named
    hypothesis.event("accepted")
    searched = emulator_fields(q, monkeypatch)
    assert searched is None or all(allowed(field) for field in searched), (q, searched)
    lucene = lucene_fields(q)
    assert lucene is None or all(allowed(field) for field in lucene), (q, lucene)
    assert all(allowed(field) for field in luqum_fields(q)), q


@pytest.mark.parametrize(
    ("q", "fields"),
    [
        ("created_at:[[a TO b] OR app_metadata.secret:s*", ["created_at", "app_metadata.secret"]),
        ("created_at:{{a TO b} OR app_metadata.secret:s*", ["created_at", "app_metadata.secret"]),
        ("name:a[b TO c] OR app_metadata.secret:s*", ["name", "app_metadata.secret"]),
        ('name:(a"b "app_metadata.secret:s* "" c)', ["name", "app_metadata.secret"]),
        ("name:x\u00a0app_metadata.secret:s", ["name", "x\u00a0app_metadata.secret"]),
        ("name:a\\:b app\\_metadata.x:y", ["name", "app_metadata.x"]),
        ("*:x a&&b:c", ["*", "a&&b"]),
    ],
)
def test_the_lucene_reader_finds_the_fields_the_old_check_missed(q: str, fields: list[str]) -> None:
    """The oracle itself: it sees fields the old scan missed, as Lucene's grammar reads them."""
    assert lucene_fields(q) == fields
