"""Annotation templates: ``"Round {round} of run {run_id} failed"``.

Placeholders are plain names (an optional format spec such as ``{score:.2f}``);
attribute and index access are refused, so a template cannot reach into objects.
A placeholder with no value stays as written, which makes a missing label visible.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from fedmesh.services.alerting.fingerprint import LABEL_NAME

_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and placeholders in order."""

    text: str
    pieces: tuple[tuple[str, str | None, str], ...]

    def render(self, values: Mapping[str, object]) -> str:
        """Fill the placeholders from ``values``."""
        out: list[str] = []
        for literal, name, spec in self.pieces:
            out.append(literal)
            if name is None:
                continue
            if name not in values:
                out.append("{" + name + (":" + spec if spec else "") + "}")
                continue
            value = values[name]
            try:
                out.append(format(value, spec))
            except (TypeError, ValueError):
                out.append(str(value))
        return "".join(out)


def compile_template(text: str) -> Template:
    """Parse ``text``; ValueError says what is malformed."""
    pieces: list[tuple[str, str | None, str]] = []
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed template {text!r}: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None, ""))
            continue
        if not LABEL_NAME.match(name):
            raise ValueError(
                f"template {text!r} has placeholder {{{name}}}; expected a plain name such as "
                "{run_id}"
            )
        if conversion is not None or (spec and "{" in spec):
            raise ValueError(
                f"template {text!r}: placeholder {{{name}}} may carry a format spec only"
            )
        pieces.append((literal, name, spec or ""))
    return Template(text, tuple(pieces))
