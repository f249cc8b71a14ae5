"""Which Auth0 user searches (`q`, Lucene syntax) a caller may send, decided on a parse tree.

A scan of the text for `word:` cannot tell a field from text inside a range, a regular
expression or an escape, and the engine that runs the search reads those differently: a query
that seemed to name only allowed fields could also search app_metadata, and `total` then read
it out one character at a time. So the query is parsed (luqum, a Lucene query parser) and the
tree is held to allow-lists: node kinds, field names, and the characters of each term, so that
Lucene's own grammar (Auth0 runs Elasticsearch's query_string) reads the same tree luqum did.

Refused, with the reason:
- terms without a field: Auth0 matches them against every root field it indexes (last_ip,
  phone_number, blocked, logins_count...), fields this API does not expose;
- a field inside another field's group (`name:(a OR email:b)`) and field names with wildcards
  or escapes (`user_metadata.*`, `app\\_metadata`): Lucene would search other fields than named;
- regular expressions, fuzzy and proximity searches, boosts and `>`/`<` ranges: costly to run
  or read differently by different parsers, and not needed to find users;
- in terms: the characters Lucene treats as syntax (`\\ " ( ) : [ ] { } ! ^ ~ / < > =`, `&&`,
  `||`, a leading `+` or `-`); they are quoted in a phrase instead. A phrase is read the same
  way by every Lucene parser.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from userapi.platform.errors import bad_request

MAX_QUERY_LENGTH = 512

# Fields a caller may search on. app_metadata stays out: it holds what users must not probe.
SEARCHABLE_FIELDS = frozenset(
    {"user_id", "email", "email_verified", "name", "given_name", "family_name", "nickname",
     "created_at", "updated_at", "last_login", "identities.connection"}
)  # fmt: skip
SEARCHABLE_PREFIX = "user_metadata."
DESCRIPTION = (
    'Lucene syntax, every term under a field: `field:value`, `field:"a phrase"`, wildcards '
    "(`name:Jan*`), ranges (`created_at:[2024-01-01 TO *]`), `AND`, `OR`, `NOT`, `-`, `+` and "
    "parentheses, `field:(a OR b)`. Searchable fields: "
    + ", ".join(sorted(SEARCHABLE_FIELDS))
    + ', user_metadata.<key>. Values holding a space or one of \\ " ( ) : [ ] { } ! ^ ~ / < > = '
    "go in double quotes. Not accepted: terms without a field, regular expressions, fuzzy, "
    "proximity and boost operators, `>`/`<` ranges, `!`, `&&`, `||`."
)

_FIELD_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
# Lucene's term characters (QueryParser.jj, _TERM_START_CHAR and _TERM_CHAR) less what
# Elasticsearch reserves besides (< > = && ||), so a term is one term to every parser.
_SYNTAX = r"\s\\\"():\[\]{}!^~/<>="
_TERM = re.compile(rf"[^{_SYNTAX}+\-&|'][^{_SYNTAX}]*")
# Inside [a TO b] Lucene takes everything up to a space or the closing bracket as the bound.
_RANGE_BOUND = re.compile(r"[^\s\\\"\[\]{}]+")
_SEPARATORS = ("&&", "||")
# Lucene separates terms with these only; luqum (and the emulator) with any Unicode space, so
# `name:x\u00a0app_metadata.x:y` is two clauses to luqum and one odd field name to Lucene.
_ODD_SPACE = re.compile(r"[^\S \t\n\r\u3000]")


def check_query(q: str) -> list[str]:
    """The fields `q` searches, in order, or a 400 when it may not be sent to Auth0."""
    if len(q) > MAX_QUERY_LENGTH:
        raise bad_request(f"q: at most {MAX_QUERY_LENGTH} characters.")
    if _ODD_SPACE.search(q):
        raise bad_request("q: use plain spaces between terms (no other kind of space).")
    grammar = _grammar()
    try:
        tree = grammar.parse(q)
    except grammar.errors as exc:
        raise bad_request(f"q: not a query this API can read ({_reason(exc)}).") from None
    return _fields(tree, grammar.kinds)


def _reason(exc: Exception) -> str:
    # The position only: luqum's message would repeat the rest of the query, however long.
    position = re.search(r"position (\d+)", str(exc))
    return f"at character {int(position[1]) + 1}" if position else "it ends too early"


def _shown(text: str) -> str:
    """A piece of the query, quoted for an error message and cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


class _Grammar:
    """luqum's parser and node classes, imported on the first query: list-users without `q`
    (and every other endpoint) never pays for building the parser."""

    def __init__(self) -> None:
        # ply reads luqum's prebuilt tables (luqum/parsetab.py) and writes nothing while the
        # grammar matches them; tests/integration/test_list_query.py checks it.
        from luqum import tree
        from luqum.exceptions import ParseError
        from luqum.parser import lexer, parser

        self._parser, self._lexer = parser, lexer
        self.errors: tuple[type[Exception], ...] = (ParseError,)
        self.kinds: dict[type[Any], str] = {
            tree.SearchField: "field",
            tree.Word: "term",
            tree.Phrase: "phrase",
            tree.Range: "range",
            tree.Group: "group",
            tree.FieldGroup: "group",
            tree.AndOperation: "operator",
            tree.OrOperation: "operator",
            tree.UnknownOperation: "operator",
            tree.Not: "operator",
            tree.Prohibit: "operator",
            tree.Plus: "operator",
        }

    def parse(self, q: str) -> Any:
        # A fresh lexer state per query: ply's lexer is a module global.
        return self._parser.parse(q, lexer=self._lexer.clone())


@functools.cache
def _grammar() -> _Grammar:
    return _Grammar()


def _fields(root: Any, kinds: dict[type[Any], str]) -> list[str]:
    fields: list[str] = []
    # (node, the field in force, inside a range): iterative, so nesting depth costs no stack.
    pending: list[tuple[Any, str | None, bool]] = [(root, None, False)]
    while pending:
        node, field, in_range = pending.pop()
        kind = kinds.get(type(node))
        if kind is None:
            raise bad_request(f"q: {_unsupported(node)} is not accepted. {_HINT}")
        if kind == "field":
            if field is not None:
                raise bad_request(
                    f"q: a field inside {field}'s group ({_shown(node.name)}). {_HINT}"
                )
            field = _field_name(node.name)
            fields.append(field)
        elif kind in ("term", "phrase", "range") and field is None:
            raise bad_request(f"q: {_shown(str(node).strip())} has no field. {_HINT}")
        elif kind == "term":
            _check_term(node.value, in_range)
        elif kind == "phrase" and in_range and (node.value == '""' or "\\" in node.value):
            # Lucene reads a quoted range bound without escapes (RANGE_QUOTED).
            raise bad_request(
                f"q: range bound {_shown(node.value)}: use a non-empty value, no '\\'."
            )
        elif kind == "range":
            in_range = True
        pending.extend((child, field, in_range) for child in reversed(node.children))
    return fields


_HINT = 'Use field:value terms, e.g. email:"jane@example.com" or name:Jan*.'


def _unsupported(node: Any) -> str:
    names = {"Regex": "a regular expression", "Fuzzy": "a fuzzy search (~)",
             "Proximity": "a proximity search (~)", "Boost": "a boost (^)",
             "From": "a '>' range", "To": "a '<' range"}  # fmt: skip
    return names.get(type(node).__name__, _shown(str(node).strip()))


def _field_name(name: str) -> str:
    if _FIELD_NAME.fullmatch(name) is None:
        raise bad_request(f"q: {_shown(name)} is not a field name. {_HINT}")
    if name in SEARCHABLE_FIELDS or name.startswith(SEARCHABLE_PREFIX):
        return name
    allowed = ", ".join(sorted(SEARCHABLE_FIELDS)) + ", user_metadata.*"
    raise bad_request(f"q: {_shown(name)} is not searchable; searchable fields: {allowed}.")


def _check_term(value: str, in_range: bool) -> None:
    pattern = _RANGE_BOUND if in_range else _TERM
    if pattern.fullmatch(value) is None or any(s in value for s in _SEPARATORS):
        raise bad_request(
            f"q: {_shown(value)} holds query syntax; put the value in double quotes, "
            'e.g. updated_at:"2024-01-01T10:00:00".'
        )
