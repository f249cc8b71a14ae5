"""The subset of Auth0's user search v3 (Lucene syntax) that the emulator understands.

Supported: `field:value`, `field:"exact phrase"`, wildcards (`jo*`, `*son` with 3+ literal
characters, `field:*` for "has a value"), ranges `field:[a TO b]` / `{a TO b}` (`*` open end),
`AND`, `OR`, `NOT` / `-`, parentheses and `field:(a OR b)`. Adjacent clauses without an
operator are OR-ed: Lucene's default operator. Everything else is a 400 `invalid_query_string`,
as Auth0 answers a query it cannot parse. Terms without a field are refused too (Auth0 would
search the normalized fields with them; userapi never sends one).

Case: the normalized fields (email, name, given_name, family_name, nickname) match
case-insensitively, every other field, metadata included, case-sensitively (Auth0's rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from userapi.emulator.errors import ManagementError, invalid_query

Matcher = Callable[[dict[str, Any]], bool]

CASE_INSENSITIVE = frozenset({"email", "name", "given_name", "family_name", "nickname"})
ROOT_FIELDS = frozenset(
    {
        *CASE_INSENSITIVE, "user_id", "email_verified", "username", "phone_number",
        "phone_verified", "logins_count", "created_at", "updated_at", "last_login", "last_ip",
        "blocked", "email.domain", "picture", "organization_id",
        "identities.connection", "identities.provider", "identities.user_id",
        "identities.isSocial",
    }
)  # fmt: skip
MIN_SUFFIX_LITERAL = 3

_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*"?)|([^\s()"]+))')


def field_values(user: dict[str, Any], path: str) -> list[Any]:
    """Every scalar at `path`, looking through arrays at any level (as Auth0's index does)."""
    if path == "email.domain":
        email = user.get("email")
        return [email.rsplit("@", 1)[1]] if isinstance(email, str) and "@" in email else []
    current: list[Any] = [user]
    for part in path.split("."):
        following: list[Any] = []
        for value in current:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and item.get(part) is not None:
                    following.append(item[part])
        current = following
    flat: list[Any] = []
    for value in current:
        flat.extend(value if isinstance(value, list) else [value])
    # Empty arrays, empty objects and nulls are not indexed by Auth0, so they never match.
    return [v for v in flat if v is not None and not isinstance(v, dict)]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tokens(query: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None:
            break  # only trailing whitespace is left
        token = next(group for group in match.groups() if group is not None)
        if token.startswith('"') and (len(token) < 2 or not token.endswith('"')):
            raise invalid_query("unterminated quoted phrase")
        tokens.append(token)
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokens(query)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise invalid_query("unexpected end of query")
        self.position += 1
        return token

    def parse(self) -> Matcher:
        if not self.tokens:
            return lambda _: True
        matcher = self.parse_or(None)
        if self.peek() is not None:
            raise invalid_query(f"unexpected {self.peek()!r}")
        return matcher

    def parse_or(self, default_field: str | None) -> Matcher:
        parts = [self.parse_and(default_field)]
        while self.peek() not in (None, ")"):
            if self.peek() == "OR":
                self.take()
            parts.append(self.parse_and(default_field))
        if len(parts) == 1:
            return parts[0]
        return lambda user: any(part(user) for part in parts)

    def parse_and(self, default_field: str | None) -> Matcher:
        parts = [self.parse_unary(default_field)]
        while self.peek() == "AND":
            self.take()
            parts.append(self.parse_unary(default_field))
        if len(parts) == 1:
            return parts[0]
        return lambda user: all(part(user) for part in parts)

    def parse_unary(self, default_field: str | None) -> Matcher:
        word = self.take()
        if word in ("AND", "OR"):
            raise invalid_query(f"{word} without a left-hand side")
        if word == "NOT" or (word.startswith("-") and len(word) > 1):
            if word != "NOT":
                self.tokens[self.position - 1] = word[1:]
                self.position -= 1
            inner = self.parse_unary(default_field)
            return lambda user: not inner(user)
        if word == "(":
            return self._group(default_field)
        if word == ")":
            raise invalid_query("unbalanced ')'")
        if word.startswith('"'):
            return self._term(default_field, word)
        field_name, colon, raw = word.partition(":")
        if not colon:
            return self._term(default_field, word)
        if not field_name:
            raise invalid_query(f"missing field name in {word!r}")
        if raw:
            if raw[0] in "[{":
                return self._range(field_name, raw)
            return self._term(field_name, raw)
        following = self.take()
        if following == "(":
            return self._group(field_name)
        if following.startswith('"'):
            return self._term(field_name, following)
        raise invalid_query(f"missing value for field {field_name!r}")

    def _group(self, default_field: str | None) -> Matcher:
        inner = self.parse_or(default_field)
        if self.take() != ")":
            raise invalid_query("missing ')'")
        return inner

    def _term(self, field_name: str | None, raw: str) -> Matcher:
        if field_name is None:
            raise invalid_query(f"bad query: {raw!r} has no field (use field:value)")
        return _term_matcher(field_name, raw)

    def _range(self, field_name: str, first: str) -> Matcher:
        words = [first]
        while not words[-1].endswith(("]", "}")):
            words.append(self.take())
        text = " ".join(words)
        match = re.fullmatch(r"([\[{])\s*(\S+)\s+TO\s+(\S+)\s*([\]}])", text)
        if match is None:
            raise invalid_query(f"bad range {text!r}")
        _check_field(field_name)
        if field_name.startswith("user_metadata."):
            raise invalid_query("range searches are not supported on user_metadata fields")
        low_inclusive, low, high, high_inclusive = match.groups()
        return _range_matcher(field_name, low, high, low_inclusive == "[", high_inclusive == "]")


def _check_field(field_name: str) -> None:
    metadata = field_name.startswith(("user_metadata.", "app_metadata."))
    if field_name not in ROOT_FIELDS and not (metadata and len(field_name.split(".")) > 1):
        raise invalid_query(f"field {field_name!r} is not searchable")


def _term_matcher(field_name: str, raw: str) -> Matcher:
    _check_field(field_name)
    fold = field_name in CASE_INSENSITIVE
    if raw.startswith('"'):
        phrase = raw[1:-1].replace('\\"', '"')
        wanted = phrase.lower() if fold else phrase
        return lambda user: any(
            (_as_text(v).lower() if fold else _as_text(v)) == wanted
            for v in field_values(user, field_name)
        )
    value = re.sub(r"\\(.)", r"\1", raw) if "\\" in raw else raw
    if value == "*":
        return lambda user: bool(field_values(user, field_name))
    if "*" in raw.replace("\\*", ""):
        return _wildcard_matcher(field_name, raw, fold)
    wanted = value.lower() if fold else value
    return lambda user: any(
        (_as_text(v).lower() if fold else _as_text(v)) == wanted
        for v in field_values(user, field_name)
    )


def _wildcard_matcher(field_name: str, raw: str, fold: bool) -> Matcher:
    if field_name.startswith("user_metadata."):
        raise invalid_query("wildcard searches are not supported on user_metadata fields")
    if raw.startswith("*") and len(raw.replace("*", "")) < MIN_SUFFIX_LITERAL:
        raise invalid_query(
            f"a leading wildcard needs at least {MIN_SUFFIX_LITERAL} literal characters"
        )
    pieces = re.split(r"(?<!\\)\*", raw)
    pattern = ".*".join(re.escape(re.sub(r"\\(.)", r"\1", piece)) for piece in pieces)
    compiled = re.compile(pattern, re.IGNORECASE if fold else 0)
    return lambda user: any(
        compiled.fullmatch(_as_text(v)) is not None for v in field_values(user, field_name)
    )


def _range_matcher(
    field_name: str, low: str, high: str, low_inclusive: bool, high_inclusive: bool
) -> Matcher:
    def within(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        for bound, inclusive, is_low in ((low, low_inclusive, True), (high, high_inclusive, False)):
            if bound == "*":
                continue
            left, right = _comparable(value, bound)
            if left is None or right is None:
                return False
            if is_low and (left < right or (left == right and not inclusive)):
                return False
            if not is_low and (left > right or (left == right and not inclusive)):
                return False
        return True

    return lambda user: any(within(v) for v in field_values(user, field_name))


def _comparable(value: Any, bound: str) -> tuple[Any, Any]:
    """Numbers compare as numbers; everything else (ISO 8601 dates included) as text."""
    if isinstance(value, int | float):
        try:
            return float(value), float(bound)
        except ValueError:
            return None, None
    return str(value), bound.strip('"')


def parse_query(query: str) -> Matcher:
    """A predicate over user objects, or ManagementError(400) when the query cannot be parsed."""
    try:
        return _Parser(query).parse()
    except RecursionError as exc:
        raise ManagementError(400, "Query is too complex.", "invalid_query_string") from exc
