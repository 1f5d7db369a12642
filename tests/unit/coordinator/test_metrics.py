from prometheus_client import generate_latest

from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.store import Phase


def sample(metrics: CoordinatorMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


def test_rounds_phases_and_leadership_are_counted() -> None:
    metrics = CoordinatorMetrics()

    metrics.leading(fencing_token=7)
    metrics.round_opened()
    metrics.transitioned(Phase.COLLECTING)
    metrics.transitioned(Phase.AGGREGATING)
    metrics.transitioned(Phase.COMPLETED)
    metrics.round_closed(completed=True, seconds=3.0)
    metrics.round_closed(completed=False, seconds=61.0)

    assert sample(metrics, "fedmesh_coordinator_leader") == 1
    assert sample(metrics, "fedmesh_coordinator_fencing_token") == 7
    assert sample(metrics, "fedmesh_coordinator_rounds_opened_total") == 1
    assert sample(metrics, "fedmesh_coordinator_phase_transitions_total", phase="AGGREGATING") == 1
    assert sample(metrics, "fedmesh_coordinator_phase_transitions_total", phase="FAILED") == 0
    assert sample(metrics, "fedmesh_coordinator_rounds_closed_total", outcome="completed") == 1
    assert sample(metrics, "fedmesh_coordinator_rounds_closed_total", outcome="failed") == 1
    assert sample(metrics, "fedmesh_coordinator_round_seconds_count") == 2
    assert sample(metrics, "fedmesh_coordinator_round_seconds_sum") == 64.0

    metrics.standing_by()

    assert sample(metrics, "fedmesh_coordinator_leader") == 0
    assert sample(metrics, "fedmesh_coordinator_leadership_changes_total", change="lost") == 1


def test_two_replicas_in_one_process_do_not_share_metrics() -> None:
    first, second = CoordinatorMetrics(), CoordinatorMetrics()

    first.round_opened()

    assert sample(second, "fedmesh_coordinator_rounds_opened_total") == 0
    assert b"fedmesh_coordinator_rounds_opened_total 1.0" in generate_latest(first.registry)
