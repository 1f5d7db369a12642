"""Version records: canonical bytes, parsing, and evaluation checks."""

from __future__ import annotations

import math

import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.registry.records import (
    Evaluation,
    Provenance,
    Rejection,
    SignedRecord,
    VersionRecord,
    record_digest,
)
from fedmesh.tensors import Manifest, TensorSpec

RECORD = VersionRecord(
    name="detector",
    version=3,
    digest="d" * 64,
    size_bytes=1234,
    manifest=Manifest.of([TensorSpec("w", "float32", (2, 3)), TensorSpec("b", "float32", (3,))]),
    parent_version=2,
    previous_digest="p" * 64,
    provenance=Provenance(
        run_id="run-1",
        round=7,
        rule="AGGREGATION_RULE_KRUM",
        participant_update_digests=("a" * 64,),
        rejected=(Rejection("node-2", "krum score 9.5"),),
        epsilon_spent=0.25,
        delta=1e-5,
    ),
    created_unix_ms=1_700_000_000_000,
    signer_key_id="0123456789abcdef",
)


def test_canonical_bytes_are_sorted_compact_json() -> None:
    canonical = RECORD.canonical()

    assert canonical.startswith(b'{"created_unix_ms":1700000000000,"delta":1e-05,"digest":"ddd')
    assert b" " not in canonical.replace(b"krum score 9.5", b"")
    assert b'"format":"fedmesh.registry.record.v1"' in canonical
    assert b'"manifest":[{"dtype":"float32","name":"b","shape":[3]},' in canonical


def test_canonical_bytes_parse_back_to_the_same_record() -> None:
    assert VersionRecord.from_canonical(RECORD.canonical()) == RECORD


def test_non_canonical_bytes_are_refused() -> None:
    spaced = RECORD.canonical().replace(b'"version":3', b'"version": 3')

    with pytest.raises(ValueError, match="not in canonical form"):
        VersionRecord.from_canonical(spaced)


def test_another_format_is_refused() -> None:
    other = RECORD.canonical().replace(b"record.v1", b"record.v0")

    with pytest.raises(ValueError, match=r"record format is 'fedmesh\.registry\.record\.v0'"):
        VersionRecord.from_canonical(other)


def test_signed_record_round_trips_through_its_stored_form() -> None:
    canonical = RECORD.canonical()
    signed = SignedRecord(canonical, record_digest(canonical), b"\x01" * 64)

    assert SignedRecord.from_json(signed.to_json(), "detector", 3) == signed


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        (Evaluation(math.inf, 0.5, 0.5, 1, 1), "evaluation loss is inf; expected a finite number"),
        (Evaluation(0.1, 0.5, -0.1, 1, 1), "evaluation pr_auc is -0.1; expected within [0, 1]"),
        (Evaluation(0.1, 0.5, 0.5, 1, 0), "evaluation reporters is 0; expected >= 1"),
    ],
)
def test_bad_evaluations_are_refused(evaluation: Evaluation, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        evaluation.check()

    assert str(info.value) == message


def test_evaluation_round_trips_through_json() -> None:
    evaluation = Evaluation(0.25, 0.8, 0.7, 1000, 5)

    assert Evaluation.from_json(evaluation.check().to_json()) == evaluation
