"""Label matchers as Alertmanager writes them: ``name=value``, ``!=``, ``=~``, ``!~``.

Regular expressions are anchored at both ends, as in Alertmanager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.fingerprint import MAX_LABEL_VALUE_CHARS, check_label_name

_TEXT = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


class MatchOp(StrEnum):
    """How a matcher compares a label's value."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"

    @property
    def is_regex(self) -> bool:
        """Whether the value is a regular expression."""
        return self in (MatchOp.REGEX, MatchOp.NOT_REGEX)

    @property
    def is_equal(self) -> bool:
        """Whether a match means the value matches (``=``, ``=~``) rather than not."""
        return self in (MatchOp.EQUAL, MatchOp.REGEX)

    @classmethod
    def of(cls, *, is_regex: bool, is_equal: bool) -> MatchOp:
        """The operator from the two flags of the wire form."""
        if is_regex:
            return cls.REGEX if is_equal else cls.NOT_REGEX
        return cls.EQUAL if is_equal else cls.NOT_EQUAL


@dataclass(frozen=True)
class Matcher:
    """One condition on one label; a missing label has the empty value."""

    name: str
    op: MatchOp
    value: str
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher."""
        actual = labels.get(self.name, "")
        if self._pattern is not None:
            hit = self._pattern.fullmatch(actual) is not None
        else:
            hit = actual == self.value
        return hit if self.op.is_equal else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{json.dumps(self.value, ensure_ascii=False)}"


def make_matcher(name: str, op: MatchOp, value: str) -> Matcher:
    """A validated matcher; InvalidArgument names what is wrong."""
    check_label_name(name, "matcher label")
    if len(value) > MAX_LABEL_VALUE_CHARS:
        raise InvalidArgument(
            f"matcher on {name!r} has a {len(value)}-character value; "
            f"at most {MAX_LABEL_VALUE_CHARS} are accepted"
        )
    pattern = None
    if op.is_regex:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise InvalidArgument(
                f"matcher {name}{op.value}{value!r} has an invalid regular expression: {exc}"
            ) from None
    return Matcher(name, op, value, pattern)


def parse_matcher(text: str) -> Matcher:
    """Parse ``name="value"`` (or ``!=``, ``=~``, ``!~``; the value may be unquoted)."""
    found = _TEXT.match(text)
    if found is None:
        raise InvalidArgument(
            f"malformed matcher {text!r}; expected name=value, name!=value, name=~regex "
            "or name!~regex"
        )
    name, op, raw = found.groups()
    value = raw
    if raw.startswith('"'):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, str):
            raise InvalidArgument(
                f"malformed matcher {text!r}: the quoted value is not a closed double-quoted string"
            )
    return make_matcher(name, MatchOp(op), value)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every matcher."""
    return all(m.matches(labels) for m in matchers)
