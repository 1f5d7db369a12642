"""Retention's choice of versions and the promotion gate: pure decisions."""

from __future__ import annotations

import pytest

from fedmesh.errors import FailedPrecondition
from fedmesh.services.registry.promotion import PromotionGate
from fedmesh.services.registry.records import (
    Evaluation,
    Provenance,
    StoredVersion,
    VersionRecord,
)
from fedmesh.services.registry.retention import droppable
from fedmesh.tensors import Manifest, TensorSpec


@pytest.mark.parametrize(
    ("head", "keep", "aliased", "dropped", "expected"),
    [
        (5, 2, set(), set(), [1, 2, 3]),
        (5, 2, {1, 3}, set(), [2]),
        (5, 2, set(), {1, 2}, [3]),
        (2, 2, set(), set(), []),
        (5, 0, set(), set(), []),
        (5, 10, set(), set(), []),
    ],
)
def test_droppable_versions(
    head: int, keep: int, aliased: set[int], dropped: set[int], expected: list[int]
) -> None:
    assert droppable(head, keep, aliased, dropped) == expected


def version(number: int, macro_f1: float | None) -> StoredVersion:
    return StoredVersion(
        record=VersionRecord(
            name="detector",
            version=number,
            digest="d" * 64,
            size_bytes=10,
            manifest=Manifest.of([TensorSpec("w", "float32", (1,))]),
            parent_version=0,
            previous_digest="",
            provenance=Provenance(),
            created_unix_ms=0,
            signer_key_id="k",
        ),
        record_digest="r" * 64,
        signature=b"",
        evaluation=None if macro_f1 is None else Evaluation(0.1, macro_f1, 0.5, 10, 1),
        blob_dropped=False,
        aliases=(),
    )


@pytest.mark.parametrize(
    ("candidate", "production"),
    [(0.5, None), (0.78, 0.80), (0.9, 0.8), (0.1, "unevaluated")],
)
def test_the_gate_passes(candidate: float, production: float | str | None) -> None:
    current = (
        None
        if production is None
        else version(1, None if production == "unevaluated" else float(production))
    )

    PromotionGate(0.02).check(version(2, candidate), current)


def test_the_gate_refuses_beyond_the_margin_with_the_numbers() -> None:
    with pytest.raises(FailedPrecondition) as info:
        PromotionGate(0.05).check(version(4, 0.70), version(3, 0.76))

    assert str(info.value) == (
        "version 4 of model 'detector' has macro-F1 0.7000; production (version 3) has "
        "0.7600; the gate allows at most 0.0500 worse, i.e. at least 0.7100"
    )


def test_the_gate_refuses_an_unevaluated_candidate() -> None:
    with pytest.raises(FailedPrecondition, match="has no evaluation"):
        PromotionGate(0.02).check(version(2, None), None)
