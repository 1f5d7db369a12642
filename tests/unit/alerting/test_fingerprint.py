import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.fingerprint import (
    check_annotations,
    check_label_name,
    check_labels,
    fingerprint,
)


def test_fingerprint_is_alertmanagers() -> None:
    # Value reported by Alertmanager 0.25 for this label set (see the Alertmanager sink test).
    labels = {"alertname": "RoundFailed", "severity": "high", "run": "r1"}
    assert fingerprint(labels) == "5a977ff31b331202"


def test_empty_label_set_is_the_fnv_offset_basis() -> None:
    assert fingerprint({}) == "cbf29ce484222325"


def test_fingerprint_ignores_order_and_sees_every_name_and_value() -> None:
    base = fingerprint({"a": "1", "b": "2"})
    assert fingerprint({"b": "2", "a": "1"}) == base
    assert fingerprint({"a": "1", "b": "3"}) != base
    assert fingerprint({"a": "1", "c": "2"}) != base
    # The separator keeps "ab"+"" apart from "a"+"b".
    assert fingerprint({"ab": ""}) != fingerprint({"a": "b"})


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("1abc", "expected [a-zA-Z_][a-zA-Z0-9_]*"),
        ("with-dash", "expected [a-zA-Z_][a-zA-Z0-9_]*"),
        ("", "expected [a-zA-Z_][a-zA-Z0-9_]*"),
        ("x" * 129, "at most 128 characters"),
        ("__name__", "names starting with __ are reserved"),
    ],
)
def test_bad_label_names_are_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason.replace("[", r"\[").replace("*", r"\*")):
        check_label_name(name)


def test_label_and_annotation_limits() -> None:
    check_labels({f"l{i}": "v" for i in range(32)})
    with pytest.raises(InvalidArgument, match="33 labels given; at most 32 are accepted"):
        check_labels({f"l{i}": "v" for i in range(33)})
    with pytest.raises(InvalidArgument, match="label 'x' has 1025 characters; at most 1024"):
        check_labels({"x": "v" * 1025})
    check_annotations({"description": "d" * 8192})
    with pytest.raises(InvalidArgument, match="annotation 'd' has 8193 characters; at most 8192"):
        check_annotations({"d": "d" * 8193})
