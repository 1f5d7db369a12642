"""Reading a YAML document node by node, so every refusal names its line.

PyYAML's composed node tree keeps each node's position; the readers here turn
scalars, lists and mappings into Python values and raise :class:`RuleFileError`
with ``<source>:<line>: <reason>`` for anything unexpected (including duplicate
and unknown keys, which a plain ``yaml.safe_load`` would silently accept).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import NoReturn, TypeVar

import yaml

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.durations import parse_duration_ms

T = TypeVar("T")

_NULL = "tag:yaml.org,2002:null"


class RuleFileError(InvalidArgument):
    """A rule file that cannot be used; the message starts with ``<source>:<line>:``."""


class NodeReader:
    """Typed access to the nodes of one YAML document."""

    def __init__(self, source: str) -> None:
        self.source = source

    def compose(self, text: str) -> yaml.Node:
        """The document's root node; malformed YAML is refused with its line."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise RuleFileError(f"{self.source}:{line}: malformed YAML: {exc.problem}") from None
        if node is None:
            raise RuleFileError(f"{self.source}:1: the rule file is empty")
        return node

    def fail(self, node: yaml.Node, reason: str) -> NoReturn:
        """Refuse ``node`` with ``reason``."""
        raise RuleFileError(f"{self.source}:{node.start_mark.line + 1}: {reason}")

    def mapping(
        self,
        node: yaml.Node,
        where: str,
        *,
        required: Collection[str] = (),
        optional: Collection[str] = (),
    ) -> dict[str, yaml.Node]:
        """A mapping with only the ``required`` and ``optional`` keys, none twice."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{where} must be a mapping")
        allowed = set(required) | set(optional)
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, f"a key of {where}")
            if key in out:
                self.fail(key_node, f"{where} has {key!r} twice")
            if allowed and key not in allowed:
                self.fail(
                    key_node,
                    f"{where} has unknown key {key!r}; expected {', '.join(sorted(allowed))}",
                )
            out[key] = value_node
        missing = [key for key in required if key not in out]
        if missing:
            self.fail(node, f"{where} is missing {', '.join(repr(k) for k in missing)}")
        return out

    def keyed(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """A mapping with free keys: (key, key node, value node), refusing duplicates."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{where} must be a mapping")
        seen: set[str] = set()
        out = []
        for key_node, value_node in node.value:
            key = self.scalar(key_node, f"a key of {where}")
            if key in seen:
                self.fail(key_node, f"{where} has {key!r} twice")
            seen.add(key)
            out.append((key, key_node, value_node))
        return out

    def scalar(self, node: yaml.Node, where: str) -> str:
        """A scalar's text (numbers and booleans as written); null is refused."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL:
            self.fail(node, f"{where} must be a single value")
        return str(node.value)

    def sequence(self, node: yaml.Node, where: str) -> list[yaml.Node]:
        """A list's item nodes."""
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{where} must be a list")
        return list(node.value)

    def strings(self, node: yaml.Node, where: str) -> list[str]:
        """A list of scalars."""
        return [self.scalar(item, f"an item of {where}") for item in self.sequence(node, where)]

    def number(self, node: yaml.Node, where: str) -> float:
        """A finite number."""
        text = self.scalar(node, where)
        try:
            value = float(text)
        except ValueError:
            self.fail(node, f"{where} must be a number; got {text!r}")
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(node, f"{where} must be a finite number; got {text!r}")
        return value

    def integer(self, node: yaml.Node, where: str, *, minimum: int = 0) -> int:
        """An integer of at least ``minimum``."""
        text = self.scalar(node, where)
        try:
            value = int(text)
        except ValueError:
            self.fail(node, f"{where} must be an integer; got {text!r}")
        if value < minimum:
            self.fail(node, f"{where} must be at least {minimum}; got {value}")
        return value

    def duration_ms(self, node: yaml.Node, where: str, *, positive: bool = False) -> int:
        """A duration (``30s``, ``5m``); ``positive`` refuses zero."""
        try:
            value = parse_duration_ms(self.scalar(node, where))
        except ValueError as exc:
            self.fail(node, f"{where}: {exc}")
        if positive and value == 0:
            self.fail(node, f"{where} must be longer than 0s")
        return value

    def convert(self, node: yaml.Node, where: str, parse: Callable[[str], T]) -> T:
        """A scalar passed through ``parse``; its ValueError or InvalidArgument is the reason."""
        text = self.scalar(node, where)
        try:
            return parse(text)
        except (ValueError, InvalidArgument) as exc:
            self.fail(node, f"{where}: {exc}")
