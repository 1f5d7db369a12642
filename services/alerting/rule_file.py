"""Load and validate a rule file (YAML) into a :class:`RuleBook`.

The format is documented in docs/alerting.md; ``default_rules.yaml`` ships in
the package. Anything wrong is refused at start with its line and the reason.
"""

from __future__ import annotations

import re
from dataclasses import replace
from importlib import resources
from pathlib import Path

import yaml

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.fingerprint import check_label_name
from fedmesh.services.alerting.matchers import Matcher, parse_matcher
from fedmesh.services.alerting.model import Severity
from fedmesh.services.alerting.rulebook import (
    RECEIVERS,
    RESERVED_LABELS,
    AnomalyRule,
    EventRule,
    InhibitRule,
    Route,
    RuleBook,
    SeverityBand,
)
from fedmesh.services.alerting.templates import Template, compile_template
from fedmesh.services.alerting.yaml_nodes import NodeReader, RuleFileError

EVENT_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_DEFAULT_RESOLVE_TIMEOUT_MS = 5 * 60_000
_DEFAULT_GROUP_WAIT_MS = 30_000
_DEFAULT_GROUP_INTERVAL_MS = 5 * 60_000
_DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000
_ROUTE_TIMERS = ("group_wait", "group_interval", "repeat_interval")
DEFAULT_RULES = "default_rules.yaml"
"""The packaged rule file, at the package's top level so ``*.yaml`` package data ships it."""


def default_rules_text() -> str:
    """The rule file shipped in the package."""
    return resources.files("fedmesh.services.alerting").joinpath(DEFAULT_RULES).read_text()


def load_rulebook(path: Path | None = None) -> RuleBook:
    """The rules of ``path``, or the packaged defaults when ``path`` is None."""
    if path is None:
        return parse_rulebook(default_rules_text(), f"{DEFAULT_RULES} (packaged)")
    try:
        text = path.read_text()
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read the rule file: {exc.strerror}") from None
    return parse_rulebook(text, str(path))


def parse_rulebook(text: str, source: str) -> RuleBook:
    """Validate rule-file ``text``; ``source`` names it in errors."""
    return _Parser(NodeReader(source)).rulebook(text)


class _Parser:
    def __init__(self, reader: NodeReader) -> None:
        self.r = reader
        self.resolve_timeout_ms = _DEFAULT_RESOLVE_TIMEOUT_MS
        self.max_new_per_minute = 0

    def rulebook(self, text: str) -> RuleBook:
        top = self.r.mapping(
            self.r.compose(text),
            "the rule file",
            required=("route", "events", "anomaly"),
            optional=("global", "inhibit_rules"),
        )
        if "global" in top:
            self.globals(top["global"])
        route = self.route(top["route"], None, "root")
        events = {
            kind: self.event_rule(kind, key_node, value)
            for kind, key_node, value in self.r.keyed(top["events"], "events")
        }
        anomaly = self.anomaly_rule(top["anomaly"])
        inhibit = top.get("inhibit_rules")
        inhibit_rules = (
            tuple(
                self.inhibit_rule(item, i)
                for i, item in enumerate(self.r.sequence(inhibit, "inhibit_rules"))
            )
            if inhibit is not None
            else ()
        )
        return RuleBook(self.r.source, events, anomaly, route, inhibit_rules)

    def globals(self, node: yaml.Node) -> None:
        fields = self.r.mapping(
            node, "global", optional=("resolve_timeout", "max_new_alerts_per_minute")
        )
        if "resolve_timeout" in fields:
            self.resolve_timeout_ms = self.r.duration_ms(
                fields["resolve_timeout"], "global.resolve_timeout", positive=True
            )
        if "max_new_alerts_per_minute" in fields:
            self.max_new_per_minute = self.r.integer(
                fields["max_new_alerts_per_minute"], "global.max_new_alerts_per_minute"
            )

    def label_name(self, node: yaml.Node, where: str, what: str = "label") -> str:
        name = self.r.scalar(node, where)
        try:
            check_label_name(name, what)
        except InvalidArgument as exc:
            self.r.fail(node, f"{where}: {exc}")
        return name

    def label_names(self, node: yaml.Node, where: str) -> tuple[str, ...]:
        names: list[str] = []
        for item in self.r.sequence(node, where):
            name = self.label_name(item, f"an item of {where}")
            if name in names:
                self.r.fail(item, f"{where} lists {name!r} twice")
            names.append(name)
        return tuple(names)

    def labels(self, node: yaml.Node, where: str) -> dict[str, str]:
        labels = {}
        for name, key_node, value in self.r.keyed(node, where):
            self.label_name(key_node, f"a key of {where}")
            if name in RESERVED_LABELS:
                self.r.fail(key_node, f"{where} may not set {name!r}; the rule sets it")
            labels[name] = self.r.scalar(value, f"{where}.{name}")
        return labels

    def annotations(self, node: yaml.Node, where: str) -> dict[str, Template]:
        out = {}
        for name, key_node, value in self.r.keyed(node, where):
            self.label_name(key_node, f"a key of {where}", "annotation")
            out[name] = self.r.convert(value, f"{where}.{name}", compile_template)
        return out

    def alert_name(self, node: yaml.Node, where: str) -> str:
        name = self.r.scalar(node, where)
        if not ALERT_NAME.match(name):
            self.r.fail(node, f"{where} {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return name

    def severity(self, node: yaml.Node, where: str) -> Severity:
        return self.r.convert(node, where, Severity.from_label)

    def limits(self, fields: dict[str, yaml.Node], where: str) -> tuple[int, int]:
        timeout = self.resolve_timeout_ms
        if "resolve_timeout" in fields:
            timeout = self.r.duration_ms(
                fields["resolve_timeout"], f"{where}.resolve_timeout", positive=True
            )
        rate = self.max_new_per_minute
        if "max_new_alerts_per_minute" in fields:
            rate = self.r.integer(
                fields["max_new_alerts_per_minute"], f"{where}.max_new_alerts_per_minute"
            )
        return timeout, rate

    def event_rule(self, kind: str, key_node: yaml.Node, node: yaml.Node) -> EventRule:
        where = f"events.{kind}"
        if not EVENT_KIND.match(kind):
            self.r.fail(key_node, f"event kind {kind!r} must match [a-z][a-z0-9_]*")
        fields = self.r.mapping(
            node,
            where,
            required=("alert", "severity"),
            optional=("labels", "annotations", "resolve_timeout", "max_new_alerts_per_minute"),
        )
        timeout, rate = self.limits(fields, where)
        return EventRule(
            kind=kind,
            alert=self.alert_name(fields["alert"], f"{where}.alert"),
            severity=self.severity(fields["severity"], f"{where}.severity"),
            labels=self.labels(fields["labels"], f"{where}.labels") if "labels" in fields else {},
            annotations=self.annotations(fields["annotations"], f"{where}.annotations")
            if "annotations" in fields
            else {},
            resolve_timeout_ms=timeout,
            max_new_per_minute=rate,
        )

    def anomaly_rule(self, node: yaml.Node) -> AnomalyRule:
        fields = self.r.mapping(
            node,
            "anomaly",
            required=("alert", "bands"),
            optional=("labels", "annotations", "resolve_timeout", "max_new_alerts_per_minute"),
        )
        timeout, rate = self.limits(fields, "anomaly")
        return AnomalyRule(
            alert=self.alert_name(fields["alert"], "anomaly.alert"),
            bands=self.bands(fields["bands"]),
            labels=self.labels(fields["labels"], "anomaly.labels") if "labels" in fields else {},
            annotations=self.annotations(fields["annotations"], "anomaly.annotations")
            if "annotations" in fields
            else {},
            resolve_timeout_ms=timeout,
            max_new_per_minute=rate,
        )

    def bands(self, node: yaml.Node) -> tuple[SeverityBand, ...]:
        bands: list[SeverityBand] = []
        items = self.r.sequence(node, "anomaly.bands")
        if not items:
            self.r.fail(node, "anomaly.bands must list at least one band")
        for i, item in enumerate(items):
            where = f"anomaly.bands[{i}]"
            fields = self.r.mapping(item, where, required=("min_score", "severity"))
            score = self.r.number(fields["min_score"], f"{where}.min_score")
            if not 0.0 < score <= 1.0:
                self.r.fail(
                    fields["min_score"], f"{where}.min_score must be in (0, 1]; got {score}"
                )
            if bands and score >= bands[-1].min_score:
                self.r.fail(
                    fields["min_score"],
                    f"{where}.min_score {score} must be below the previous band's "
                    f"{bands[-1].min_score} (bands are listed highest first)",
                )
            bands.append(
                SeverityBand(score, self.severity(fields["severity"], f"{where}.severity"))
            )
        return tuple(bands)

    def matchers(self, node: yaml.Node, where: str) -> tuple[Matcher, ...]:
        return tuple(
            self.r.convert(item, f"an item of {where}", parse_matcher)
            for item in self.r.sequence(node, where)
        )

    def route(self, node: yaml.Node, parent: Route | None, path: str) -> Route:
        where = "route" if parent is None else f"route {path}"
        optional = ["receivers", "group_by", *_ROUTE_TIMERS, "routes"]
        if parent is not None:
            optional.append("matchers")
        fields = self.r.mapping(node, where, optional=optional)
        if parent is None and "receivers" not in fields:
            self.r.fail(node, "route must name its receivers")
        receivers = parent.receivers if parent else ()
        if "receivers" in fields:
            receivers = tuple(self.r.strings(fields["receivers"], f"{where}.receivers"))
            unknown = [r for r in receivers if r not in RECEIVERS]
            if unknown or not receivers:
                self.r.fail(
                    fields["receivers"],
                    f"{where}.receivers must list some of {', '.join(RECEIVERS)}; "
                    f"got {list(receivers)}",
                )
        group_by = parent.group_by if parent else ()
        if "group_by" in fields:
            group_by = self.label_names(fields["group_by"], f"{where}.group_by")
        timers = {
            "group_wait": parent.group_wait_ms if parent else _DEFAULT_GROUP_WAIT_MS,
            "group_interval": parent.group_interval_ms if parent else _DEFAULT_GROUP_INTERVAL_MS,
            "repeat_interval": parent.repeat_interval_ms if parent else _DEFAULT_REPEAT_INTERVAL_MS,
        }
        for timer in _ROUTE_TIMERS:
            if timer in fields:
                timers[timer] = self.r.duration_ms(
                    fields[timer], f"{where}.{timer}", positive=timer != "group_wait"
                )
        matchers: tuple[Matcher, ...] = ()
        if parent is not None:
            if "matchers" not in fields:
                self.r.fail(node, f"{where} needs matchers (only the root route matches all)")
            matchers = self.matchers(fields["matchers"], f"{where}.matchers")
        route = Route(
            path=path,
            matchers=matchers,
            receivers=receivers,
            group_by=group_by,
            group_wait_ms=timers["group_wait"],
            group_interval_ms=timers["group_interval"],
            repeat_interval_ms=timers["repeat_interval"],
        )
        if "routes" not in fields:
            return route
        children = tuple(
            self.route(child, route, f"{path}.{i}")
            for i, child in enumerate(self.r.sequence(fields["routes"], f"{where}.routes"))
        )
        return replace(route, routes=children)

    def inhibit_rule(self, node: yaml.Node, index: int) -> InhibitRule:
        where = f"inhibit_rules[{index}]"
        fields = self.r.mapping(
            node, where, required=("source_matchers", "target_matchers"), optional=("equal",)
        )
        source = self.matchers(fields["source_matchers"], f"{where}.source_matchers")
        target = self.matchers(fields["target_matchers"], f"{where}.target_matchers")
        for name, matchers in (("source_matchers", source), ("target_matchers", target)):
            if not matchers:
                self.r.fail(fields[name], f"{where}.{name} must list at least one matcher")
        equal: tuple[str, ...] = ()
        if "equal" in fields:
            equal = self.label_names(fields["equal"], f"{where}.equal")
        return InhibitRule(source, target, equal)
