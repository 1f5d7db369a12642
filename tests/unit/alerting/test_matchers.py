import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.matchers import MatchOp, make_matcher, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('alertname="NodeStale"', "alertname", MatchOp.EQUAL, "NodeStale"),
        ("alertname=NodeStale", "alertname", MatchOp.EQUAL, "NodeStale"),
        (' region != "r1" ', "region", MatchOp.NOT_EQUAL, "r1"),
        ('node=~"n[0-9]+"', "node", MatchOp.REGEX, "n[0-9]+"),
        ("node!~n1|n2", "node", MatchOp.NOT_REGEX, "n1|n2"),
        ('summary="say \\"hi\\""', "summary", MatchOp.EQUAL, 'say "hi"'),
        ("region=", "region", MatchOp.EQUAL, ""),
    ],
)
def test_parses_alertmanager_matchers(text: str, name: str, op: MatchOp, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)


@pytest.mark.parametrize(
    ("op", "value", "labels", "expected"),
    [
        (MatchOp.EQUAL, "r1", {"region": "r1"}, True),
        (MatchOp.EQUAL, "r1", {"region": "r10"}, False),
        (MatchOp.NOT_EQUAL, "r1", {"region": "r2"}, True),
        (MatchOp.NOT_EQUAL, "r1", {}, True),
        (MatchOp.EQUAL, "", {}, True),
        (MatchOp.REGEX, "r[12]", {"region": "r2"}, True),
        # Anchored at both ends, as in Alertmanager.
        (MatchOp.REGEX, "r[12]", {"region": "r21"}, False),
        (MatchOp.REGEX, "r.*", {}, False),
        (MatchOp.NOT_REGEX, "r[12]", {"region": "r3"}, True),
        (MatchOp.NOT_REGEX, "r[12]", {"region": "r1"}, False),
    ],
)
def test_matching(op: MatchOp, value: str, labels: dict[str, str], expected: bool) -> None:
    assert make_matcher("region", op, value).matches(labels) is expected


def test_text_form_round_trips() -> None:
    matcher = make_matcher("node", MatchOp.NOT_REGEX, 'n"1|n2')
    assert str(matcher) == 'node!~"n\\"1|n2"'
    assert parse_matcher(str(matcher)) == matcher


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("region", "malformed matcher 'region'; expected name=value"),
        ("1x=y", "malformed matcher '1x=y'"),
        ('region="r1', "the quoted value is not a closed double-quoted string"),
        ('node=~"n[0-9"', "has an invalid regular expression"),
        ("__name__=x", "names starting with __ are reserved"),
    ],
)
def test_malformed_matchers_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_matcher(text)
    assert reason in str(info.value)


def test_wire_flags_map_to_operators() -> None:
    assert MatchOp.of(is_regex=False, is_equal=True) is MatchOp.EQUAL
    assert MatchOp.of(is_regex=False, is_equal=False) is MatchOp.NOT_EQUAL
    assert MatchOp.of(is_regex=True, is_equal=True) is MatchOp.REGEX
    assert MatchOp.of(is_regex=True, is_equal=False) is MatchOp.NOT_REGEX
