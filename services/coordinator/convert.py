"""Protobuf ↔ domain conversions for the coordinator's RPC edge."""

from __future__ import annotations

import json

from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.services.coordinator.nodes import Node, NodeState
from fedmesh.services.coordinator.ports import Evaluation
from fedmesh.services.coordinator.runs import ModelRef, Run
from fedmesh.services.coordinator.spec import (
    AggregationSettings,
    PrivacySettings,
    RunSpec,
    SecureAggregationSettings,
    TrainingSettings,
)
from fedmesh.services.coordinator.tasks import Task, TaskKind
from fedmesh.store import Phase, RoundRecord

RULE_NAMES = {
    common.AGGREGATION_RULE_FEDAVG: "fedavg",
    common.AGGREGATION_RULE_KRUM: "krum",
    common.AGGREGATION_RULE_MULTI_KRUM: "multi_krum",
    common.AGGREGATION_RULE_MEDIAN: "median",
    common.AGGREGATION_RULE_TRIMMED_MEAN: "trimmed_mean",
    common.AGGREGATION_RULE_BULYAN: "bulyan",
    common.AGGREGATION_RULE_GEOMETRIC_MEDIAN: "geometric_median",
    common.AGGREGATION_RULE_CENTERED_CLIPPING: "centered_clipping",
    common.AGGREGATION_RULE_NORM_BOUNDING: "norm_bounding",
}
RULE_ENUMS = {name: enum for enum, name in RULE_NAMES.items()}
PHASES = {
    Phase.PENDING: pb.ROUND_PHASE_PENDING,
    Phase.COLLECTING: pb.ROUND_PHASE_COLLECTING,
    Phase.AGGREGATING: pb.ROUND_PHASE_AGGREGATING,
    Phase.COMPLETED: pb.ROUND_PHASE_COMPLETED,
    Phase.FAILED: pb.ROUND_PHASE_FAILED,
}
NODE_STATES = {
    NodeState.ONLINE: pb.NODE_STATE_ONLINE,
    NodeState.STALE: pb.NODE_STATE_STALE,
    NodeState.BANNED: pb.NODE_STATE_BANNED,
}


def rule_name(rule: common.AggregationRule.ValueType) -> str:
    """The domain name of a wire rule: "" when unset, a name that says so when unknown."""
    if rule == common.AGGREGATION_RULE_UNSPECIFIED:
        return ""
    return RULE_NAMES.get(rule, f"enum value {rule}")


def spec_from_proto(message: pb.RunSpec) -> RunSpec:
    """The domain spec of a StartRun request; validation happens in the domain."""
    agg = message.aggregation
    defaults = PrivacySettings()
    privacy = message.privacy
    return RunSpec(
        model_name=message.model_name,
        rounds=message.rounds,
        aggregation=AggregationSettings(
            rule=rule_name(agg.rule),
            byzantine_f=agg.byzantine_f,
            bucket_size=agg.bucket_size,
            multi_krum_m=agg.multi_krum_m,
            clip_radius=agg.clip_radius,
            norm_bound=agg.norm_bound,
        ),
        min_participants=message.min_participants or 3,
        target_participants=message.target_participants or 10,
        over_selection=message.over_selection,
        collect_deadline_s=message.collect_deadline_s,
        aggregate_deadline_s=message.aggregate_deadline_s,
        seed=message.seed,
        training=TrainingSettings(
            local_epochs=message.training.local_epochs or 1,
            learning_rate=message.training.learning_rate or 1e-3,
        ),
        privacy=PrivacySettings(
            enabled=privacy.enabled,
            clip_norm=privacy.clip_norm or defaults.clip_norm,
            noise_multiplier=privacy.noise_multiplier or defaults.noise_multiplier,
            delta=privacy.delta or defaults.delta,
            epsilon_budget=privacy.epsilon_budget or defaults.epsilon_budget,
            sampling_rate=privacy.sampling_rate,
        ),
        secure_aggregation=secagg_from_proto(message.secure_aggregation),
    )


def spec_to_proto(spec: RunSpec) -> pb.RunSpec:
    """The wire form of a domain spec."""
    agg = spec.aggregation
    return pb.RunSpec(
        model_name=spec.model_name,
        aggregation=common.AggregationSpec(
            rule=RULE_ENUMS.get(agg.rule, common.AGGREGATION_RULE_UNSPECIFIED),
            byzantine_f=agg.byzantine_f,
            bucket_size=agg.bucket_size,
            multi_krum_m=agg.multi_krum_m,
            clip_radius=agg.clip_radius,
            norm_bound=agg.norm_bound,
        ),
        rounds=spec.rounds,
        min_participants=spec.min_participants,
        target_participants=spec.target_participants,
        over_selection=spec.over_selection,
        collect_deadline_s=spec.collect_deadline_s,
        aggregate_deadline_s=spec.aggregate_deadline_s,
        seed=spec.seed,
        training=training_to_proto(spec.training),
        privacy=privacy_to_proto(spec.privacy),
        secure_aggregation=secagg_to_proto(spec.secure_aggregation),
    )


def training_to_proto(training: TrainingSettings) -> common.TrainingSpec:
    """Wire form of local training settings."""
    return common.TrainingSpec(
        local_epochs=training.local_epochs, learning_rate=training.learning_rate
    )


def privacy_to_proto(privacy: PrivacySettings) -> common.PrivacySpec:
    """Wire form of DP settings."""
    return common.PrivacySpec(
        enabled=privacy.enabled,
        clip_norm=privacy.clip_norm,
        noise_multiplier=privacy.noise_multiplier,
        delta=privacy.delta,
        epsilon_budget=privacy.epsilon_budget,
        sampling_rate=privacy.sampling_rate,
    )


def secagg_to_proto(secagg: SecureAggregationSettings) -> common.SecureAggregationSpec:
    """Wire form of SecAgg+ settings."""
    return common.SecureAggregationSpec(
        enabled=secagg.enabled,
        threshold=secagg.threshold,
        neighbours=secagg.neighbours,
        bucket_size=secagg.bucket_size,
        min_survivors=secagg.min_survivors,
        clip_range=secagg.clip_range,
    )


def secagg_from_proto(message: common.SecureAggregationSpec) -> SecureAggregationSettings:
    """Domain form of SecAgg+ settings (0 stays 0: the default; validation is the domain's)."""
    return SecureAggregationSettings(
        enabled=message.enabled,
        threshold=message.threshold,
        neighbours=message.neighbours,
        bucket_size=message.bucket_size,
        min_survivors=message.min_survivors,
        clip_range=message.clip_range,
    )


def model_to_proto(model: ModelRef) -> common.ModelRef:
    """Wire form of a model reference."""
    return common.ModelRef(name=model.name, version=model.version, digest=model.digest)


def model_from_proto(model: common.ModelRef) -> ModelRef:
    """Domain form of a model reference."""
    return ModelRef(model.name, model.version, model.digest)


def node_to_proto(node: Node, now_unix_ms: int, stale_after_ms: int) -> pb.NodeInfo:
    """Wire form of a node with its state now."""
    return pb.NodeInfo(
        node_id=node.node_id,
        state=NODE_STATES[node.state(now_unix_ms, stale_after_ms)],
        trust=node.trust,
        samples=node.samples,
        region=node.region,
        last_heartbeat_unix_ms=node.last_heartbeat_unix_ms,
        evidence_count=node.evidence_count,
        capabilities=dict(node.capabilities),
    )


def run_to_proto(run: Run, phase: Phase | None) -> pb.RunInfo:
    """Wire form of a run with its current round's phase."""
    statuses = {
        "RUNNING": pb.RUN_STATUS_RUNNING,
        "COMPLETED": pb.RUN_STATUS_COMPLETED,
        "FAILED": pb.RUN_STATUS_FAILED,
        "STOPPED": pb.RUN_STATUS_STOPPED,
    }
    return pb.RunInfo(
        run_id=run.run_id,
        spec=spec_to_proto(run.spec),
        status=statuses[run.status.value],
        current_round=run.current_round,
        phase=PHASES[phase] if phase else pb.ROUND_PHASE_UNSPECIFIED,
        model=model_to_proto(run.model),
        failure_reason=run.failure_reason,
        started_unix_ms=run.started_unix_ms,
        rounds_completed=run.rounds_completed,
        rounds_failed=run.rounds_failed,
    )


def evaluation_to_proto(evaluation: Evaluation) -> common.EvaluationMetrics:
    """Wire form of combined evaluation metrics."""
    return common.EvaluationMetrics(
        loss=evaluation.loss,
        macro_f1=evaluation.macro_f1,
        pr_auc=evaluation.pr_auc,
        samples=evaluation.samples,
        reporters=evaluation.reporters,
    )


def round_to_proto(record: RoundRecord, evaluation: Evaluation | None) -> pb.RoundInfo:
    """Wire form of a round record, with the evaluation of the model it produced."""
    fields = record.fields
    info = pb.RoundInfo(
        run_id=record.run_id,
        round=record.round_no,
        phase=PHASES[record.phase],
        participants=sorted(record.participants),
        received=sorted(record.receipts),
        excluded=[
            pb.ExcludedUpdate(node_id=e["node_id"], reason=e["reason"])
            for e in json.loads(fields.get("excluded", "[]"))
        ],
        failure_reason=fields.get("failure_reason", ""),
        opened_unix_ms=record.opened_unix_ms,
        deadline_unix_ms=record.deadline_unix_ms,
        closed_unix_ms=int(fields.get("closed_unix_ms", "0")),
        mean_local_loss=float(fields.get("mean_local_loss", "0")),
    )
    if "base_model" in fields:
        info.base_model.CopyFrom(model_to_proto(ModelRef.from_json(fields["base_model"])))
    if "result_model" in fields:
        info.result_model.CopyFrom(model_to_proto(ModelRef.from_json(fields["result_model"])))
    if evaluation is not None and evaluation.reporters:
        info.evaluation.CopyFrom(evaluation_to_proto(evaluation))
    return info


def task_to_proto(task: Task) -> pb.Task:
    """Wire form of a task."""
    return pb.Task(
        task_id=task.task_id,
        kind=pb.TASK_KIND_TRAIN if task.kind is TaskKind.TRAIN else pb.TASK_KIND_EVALUATE,
        run_id=task.run_id,
        round=task.round_no,
        model=model_to_proto(task.model),
        aggregator_address=task.aggregator_address,
        deadline_unix_ms=task.deadline_unix_ms,
        training=training_to_proto(task.training),
        privacy=privacy_to_proto(task.privacy),
        secure_aggregation=secagg_to_proto(task.secure_aggregation),
        trace_context=common.TraceContext(carrier=dict(task.trace_carrier)),
        peer_signing_keys={n: bytes.fromhex(k) for n, k in task.peer_signing_keys.items()},
    )
