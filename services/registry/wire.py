"""Conversions between the registry's protobuf messages and its domain types."""

from __future__ import annotations

from fedmesh.errors import InvalidArgument
from fedmesh.proto.common.v1 import common_pb2
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.services.registry.aliases import AliasAction, AliasMove
from fedmesh.services.registry.catalog import ModelSummary, RegistryStatus
from fedmesh.services.registry.chain import ChainReport
from fedmesh.services.registry.publishing import PublishRequest
from fedmesh.services.registry.records import Evaluation, Provenance, Rejection, StoredVersion
from fedmesh.tensors import Manifest, TensorSpec

_ACTIONS = {
    AliasAction.PROMOTE: pb.ALIAS_ACTION_PROMOTE,
    AliasAction.ROLLBACK: pb.ALIAS_ACTION_ROLLBACK,
}


def manifest_from_pb(manifest: common_pb2.TensorManifest) -> Manifest:
    """A checked manifest (known dtypes, unique names, non-negative shapes)."""
    return Manifest.of(TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in manifest.tensors)


def manifest_to_pb(manifest: Manifest) -> common_pb2.TensorManifest:
    """The wire form of a manifest."""
    return common_pb2.TensorManifest(
        tensors=[
            common_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape))
            for s in manifest.tensors
        ]
    )


def rule_name(rule: int) -> str:
    """The enum name of an aggregation rule; InvalidArgument for a value the contract lacks."""
    try:
        return common_pb2.AggregationRule.Name(common_pb2.AggregationRule.ValueType(rule))
    except ValueError:
        raise InvalidArgument(f"aggregation rule {rule} is not one of the contract's") from None


def publish_request_from_pb(header: pb.PublishHeader) -> PublishRequest:
    """The domain form of a PublishModel header."""
    return PublishRequest(
        name=header.name,
        manifest=manifest_from_pb(header.manifest),
        digest=header.digest,
        size_bytes=header.size_bytes,
        parent_version=header.parent_version,
        provenance=Provenance(
            run_id=header.run_id,
            round=header.round,
            rule=rule_name(header.rule),
            participant_update_digests=tuple(header.participant_update_digests),
            rejected=tuple(Rejection(r.node_id, r.reason) for r in header.rejected),
            epsilon_spent=header.epsilon_spent,
            delta=header.delta,
        ),
        fencing_token=header.fencing_token,
    )


def evaluation_from_pb(metrics: common_pb2.EvaluationMetrics) -> Evaluation:
    """The domain form of evaluation metrics (unchecked)."""
    return Evaluation(
        loss=metrics.loss,
        macro_f1=metrics.macro_f1,
        pr_auc=metrics.pr_auc,
        samples=metrics.samples,
        reporters=metrics.reporters,
    )


def evaluation_to_pb(evaluation: Evaluation) -> common_pb2.EvaluationMetrics:
    """The wire form of evaluation metrics."""
    return common_pb2.EvaluationMetrics(
        loss=evaluation.loss,
        macro_f1=evaluation.macro_f1,
        pr_auc=evaluation.pr_auc,
        samples=evaluation.samples,
        reporters=evaluation.reporters,
    )


def version_to_pb(version: StoredVersion) -> pb.ModelVersion:
    """The wire form of a verified version."""
    record = version.record
    p = record.provenance
    message = pb.ModelVersion(
        ref=common_pb2.ModelRef(name=record.name, version=record.version, digest=record.digest),
        parent_version=record.parent_version,
        previous_digest=record.previous_digest,
        run_id=p.run_id,
        round=p.round,
        rule=common_pb2.AggregationRule.Value(p.rule),
        participant_update_digests=list(p.participant_update_digests),
        rejected=[pb.RejectedNode(node_id=r.node_id, reason=r.reason) for r in p.rejected],
        epsilon_spent=p.epsilon_spent,
        delta=p.delta,
        created_unix_ms=record.created_unix_ms,
        signature=version.signature,
        manifest=manifest_to_pb(record.manifest),
        size_bytes=record.size_bytes,
        aliases=list(version.aliases),
        blob_deleted=version.blob_dropped,
        record_digest=version.record_digest,
        signer_key_id=record.signer_key_id,
    )
    if version.evaluation is not None:
        message.evaluation.CopyFrom(evaluation_to_pb(version.evaluation))
    return message


def alias_move_to_pb(move: AliasMove) -> pb.AliasMove:
    """The wire form of an alias move."""
    return pb.AliasMove(
        alias=move.alias,
        from_version=move.from_version,
        to_version=move.to_version,
        action=_ACTIONS[move.action],
        moved_unix_ms=move.moved_unix_ms,
        reason=move.reason,
    )


def summary_to_pb(summary: ModelSummary) -> pb.ModelSummary:
    """The wire form of a model summary."""
    return pb.ModelSummary(
        name=summary.name, latest_version=summary.latest_version, aliases=summary.aliases
    )


def chain_report_to_pb(report: ChainReport) -> pb.VerifyChainResponse:
    """The wire form of a chain verification."""
    return pb.VerifyChainResponse(
        versions_checked=report.versions_checked,
        head_digest=report.head_digest,
        blobs_checked=report.blobs_checked,
    )


def status_to_pb(status: RegistryStatus) -> pb.GetStatusResponse:
    """The wire form of the registry's status."""
    return pb.GetStatusResponse(
        models=status.models,
        versions=status.versions,
        blob_bytes=status.blob_bytes,
        signing_public_key=status.signing_public_key,
        signing_key_id=status.signing_key_id,
    )
