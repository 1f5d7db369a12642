"""Protobuf ↔ domain types of the aggregator's contract."""

from __future__ import annotations

from fedmesh.aggregation import Rule, RuleSpec
from fedmesh.errors import InvalidArgument
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.services.aggregator.central_privacy import PrivacySettings
from fedmesh.services.aggregator.results import RoundResult
from fedmesh.services.aggregator.update import ModelRef, UpdateHeader
from fedmesh.services.aggregator.validation import InvalidUpdate
from fedmesh.tensors import Manifest, TensorSpec

_RULE_PREFIX = "AGGREGATION_RULE_"


def manifest_from_proto(manifest: common.TensorManifest) -> Manifest:
    """A manifest from the wire; InvalidArgument on duplicate names or unknown dtypes."""
    return Manifest.of(
        TensorSpec(spec.name, spec.dtype, tuple(int(d) for d in spec.shape))
        for spec in manifest.tensors
    )


def model_ref_from_proto(ref: common.ModelRef) -> ModelRef:
    """A model reference from the wire."""
    return ModelRef(ref.name, int(ref.version), ref.digest)


def model_ref_to_proto(ref: ModelRef) -> common.ModelRef:
    """The wire form of a model reference."""
    return common.ModelRef(name=ref.name, version=ref.version, digest=ref.digest)


def header_from_proto(header: pb.UpdateHeader) -> UpdateHeader:
    """The domain header of an upload; a malformed manifest is InvalidArgument."""
    try:
        manifest = manifest_from_proto(header.manifest)
    except InvalidArgument as exc:
        raise InvalidUpdate("malformed_header", f"header.manifest: {exc}") from None
    return UpdateHeader(
        run_id=header.run_id,
        round_no=int(header.round),
        node_id=header.node_id,
        manifest=manifest,
        digest=header.digest,
        num_samples=int(header.num_samples),
        payload_bytes=int(header.payload_bytes),
        base_model=model_ref_from_proto(header.base_model),
        local_loss=header.local_loss,
        nonce=header.nonce,
        signature=header.signature,
    )


def rule_from_proto(rule: common.AggregationRule.ValueType) -> Rule:
    """The engine's rule for a wire enum value; UNSPECIFIED or unknown is InvalidArgument."""
    known = {rule_to_proto(r): r for r in Rule}
    if rule not in known:
        named = rule in common.AggregationRule.values()
        shown = common.AggregationRule.Name(rule) if named else rule
        raise InvalidArgument(
            f"aggregation.rule is {shown}; expected one of "
            f"{', '.join(_RULE_PREFIX + r.value.upper() for r in Rule)}"
        )
    return known[rule]


def rule_to_proto(rule: Rule) -> common.AggregationRule.ValueType:
    """The wire enum value of a rule."""
    return common.AggregationRule.Value(_RULE_PREFIX + rule.value.upper())


def rule_spec_from_proto(spec: common.AggregationSpec) -> RuleSpec:
    """The engine's spec; zero radius, bound or Multi-Krum m mean the rule's default."""
    rule = rule_from_proto(spec.rule)
    try:
        return RuleSpec(
            rule=rule,
            f=spec.byzantine_f,
            bucket_size=spec.bucket_size,
            multi_krum_m=spec.multi_krum_m or None,
            tau=spec.clip_radius or 1.0,
            norm_bound=spec.norm_bound or 1.0,
        )
    except ValueError as exc:
        raise InvalidArgument(f"aggregation: {exc}") from None


def privacy_from_proto(privacy: common.PrivacySpec) -> PrivacySettings:
    """A run's DP parameters from the wire."""
    return PrivacySettings(
        enabled=privacy.enabled,
        clip_norm=privacy.clip_norm,
        noise_multiplier=privacy.noise_multiplier,
        delta=privacy.delta,
        epsilon_budget=privacy.epsilon_budget,
        sampling_rate=privacy.sampling_rate,
    )


def result_to_proto(result: RoundResult) -> pb.AggregateRoundResponse:
    """The wire form of a round's result."""
    return pb.AggregateRoundResponse(
        model=model_ref_to_proto(result.model),
        evidence=[
            pb.UpdateEvidence(
                node_id=e.node_id,
                digest=e.digest,
                score=e.score if e.score is not None else 0.0,
                has_score=e.score is not None,
                excluded=e.excluded,
                clipped=e.clipped,
                reason=e.reason,
            )
            for e in result.evidence
        ],
        updates_used=result.updates_used,
        mean_local_loss=result.mean_local_loss,
        epsilon_spent=result.epsilon_spent,
        aggregation_seconds=result.aggregation_seconds,
    )
