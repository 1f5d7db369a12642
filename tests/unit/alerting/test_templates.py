import pytest

from fedmesh.services.alerting.templates import compile_template


def test_fills_placeholders_with_format_specs() -> None:
    template = compile_template("Node {node} scored {score:.2f} ({{raw}})")
    assert template.render({"node": "n7", "score": 0.93456}) == "Node n7 scored 0.93 ({raw})"


def test_a_missing_value_stays_visible() -> None:
    template = compile_template("Round {round} of {run:>5}")
    assert template.render({"round": "3"}) == "Round 3 of {run:>5}"


def test_a_spec_that_does_not_fit_the_value_falls_back_to_the_plain_value() -> None:
    assert compile_template("{round:d}").render({"round": "3"}) == "3"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{node.__class__}", "expected a plain name such as {run_id}"),
        ("{0}", "expected a plain name"),
        ("{items[0]}", "expected a plain name"),
        ("{node!r}", "may carry a format spec only"),
        ("{node", "malformed template"),
        ("node}", "malformed template"),
    ],
)
def test_refuses_templates_that_reach_into_objects_or_are_malformed(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("{", r"\{").replace("[", r"\[")):
        compile_template(text)
