import numpy as np
import pytest
import torch

from fedmesh.mesh import (
    FAULT_KINDS,
    FaultKind,
    FaultRates,
    MeshConfig,
    TelemetrySeries,
    feature_ranges,
    simulate,
)
from fedmesh.model import FEATURE_NAMES

SMALL = MeshConfig(num_nodes=80)


def test_same_seed_same_series_other_seed_other_series() -> None:
    first = simulate(SMALL, steps=30, seed=5)
    second = simulate(SMALL, steps=30, seed=5)
    other = simulate(SMALL, steps=30, seed=6)

    assert torch.equal(first.features, second.features)
    assert torch.equal(first.link_active, second.link_active)
    assert torch.equal(first.fault_kind, second.fault_kind)
    assert first.faults == second.faults
    assert not torch.equal(first.features, other.features)


def test_shapes_and_dtypes(busy_series: TelemetrySeries) -> None:
    s = busy_series

    assert s.features.shape == (120, 150, 8)
    assert s.features.dtype == torch.float32
    assert s.labels.shape == (120, 150)
    assert s.labels.dtype == torch.bool
    assert s.link_active.shape == (120, s.mesh.num_links)
    assert s.positions.shape == (150, 2)


def test_every_feature_stays_in_its_physical_range(
    busy_config: MeshConfig, busy_series: TelemetrySeries
) -> None:
    ranges = feature_ranges(busy_config)
    assert tuple(ranges) == FEATURE_NAMES
    for index, (name, (low, high)) in enumerate(ranges.items()):
        values = busy_series.features[..., index]
        assert bool(torch.isfinite(values).all()), name
        assert float(values.min()) >= low, name
        assert float(values.max()) <= high, name


def test_healthy_telemetry_looks_like_a_working_mesh(busy_series: TelemetrySeries) -> None:
    healthy = busy_series.features[~busy_series.labels]
    median = healthy.median(dim=0).values

    assert -85.0 < median[0] < -60.0  # rssi dBm
    assert 10.0 < median[1] < 35.0  # snr dB
    assert median[2] < 0.02  # loss rate
    assert median[4] < 50.0  # latency ms
    assert median[5] > 10.0  # throughput Mbps


def test_ground_truth_holds_every_fault_kind(busy_series: TelemetrySeries) -> None:
    for kind in FAULT_KINDS:
        records = [f for f in busy_series.faults if f.kind is kind]
        assert records, kind.label
        assert int((busy_series.fault_kind == kind).sum()) > 0, kind.label
    assert int((busy_series.fault_kind == FaultKind.NONE).sum()) > 0


def test_labels_point_at_their_fault_instance(busy_series: TelemetrySeries) -> None:
    s = busy_series
    labelled = s.fault_instance >= 0

    assert torch.equal(labelled, s.labels)
    for step, node in labelled.nonzero().tolist()[::37]:
        record = s.faults[int(s.fault_instance[step, node])]
        assert record.start <= step < record.end
        assert node in record.nodes
        assert int(s.fault_kind[step, node]) == record.kind


def test_cascade_spreads_along_live_links(busy_series: TelemetrySeries) -> None:
    s = busy_series
    links = s.mesh.links
    spread = 0
    for record in (f for f in s.faults if f.kind is FaultKind.CASCADE):
        mine = s.fault_instance == record.id
        for node in record.nodes:
            if node == record.origin:
                continue
            first = int(mine[:, node].nonzero()[0])
            live = links[s.link_active[first - 1]]
            neighbours = torch.cat([live[live[:, 0] == node, 1], live[live[:, 1] == node, 0]])
            assert bool(mine[first - 1, neighbours].any()), (record.id, node)
            spread += 1
    assert spread > 0


def test_partition_cuts_every_link_out_of_the_region(
    busy_config: MeshConfig, busy_series: TelemetrySeries
) -> None:
    s = busy_series
    timeout = busy_config.traffic.route_timeout_ms
    partitions = [f for f in s.faults if f.kind is FaultKind.PARTITION]
    assert partitions
    for record in partitions:
        inside = torch.zeros(s.num_nodes, dtype=torch.bool)
        inside[list(record.nodes)] = True
        crossing = inside[s.mesh.links[:, 0]] != inside[s.mesh.links[:, 1]]
        during = range(record.start, min(record.end, s.num_steps))
        assert not bool(s.link_active[during.start : during.stop][:, crossing].any())
        assert not bool(s.mesh.gateways[inside].any())
        # Cut off from every gateway: no route, so timeouts and no throughput.
        owned = s.fault_instance[during.start : during.stop] == record.id
        assert bool((s.features[during.start : during.stop, :, 4][owned] == timeout).all())
        assert bool((s.features[during.start : during.stop, :, 5][owned] == 0.0).all())


def test_partition_edges_come_back_after_the_fault() -> None:
    only_partitions = FaultRates(onset_rate=4e-4, kind_weights=(0, 0, 0, 0, 1))
    s = simulate(MeshConfig(num_nodes=120, faults=only_partitions), steps=200, seed=2)

    def active_at(step: int) -> int:
        return sum(f.start <= step < f.end for f in s.faults)

    ended = [f for f in s.faults if f.end < s.num_steps and active_at(f.end) == 0]
    assert ended
    for record in ended:
        inside = torch.zeros(s.num_nodes, dtype=torch.bool)
        inside[list(record.nodes)] = True
        crossing = inside[s.mesh.links[:, 0]] != inside[s.mesh.links[:, 1]]
        assert not bool(s.link_active[record.end - 1][crossing].any())
        assert bool(s.link_active[record.end][crossing].any())


def test_link_degradation_weakens_rssi_and_interference_raises_noise(
    busy_series: TelemetrySeries,
) -> None:
    s = busy_series
    healthy = s.features[~s.labels]
    degraded = s.features[s.fault_kind == FaultKind.LINK_DEGRADATION]
    jammed = s.features[s.fault_kind == FaultKind.INTERFERENCE]

    assert float(degraded[:, 0].median()) < float(healthy[:, 0].median()) - 3.0
    assert float(jammed[:, 1].median()) < float(healthy[:, 1].median()) - 3.0
    # Interference raises the noise floor, not the path loss: RSSI stays where it was.
    assert abs(float(jammed[:, 0].median()) - float(healthy[:, 0].median())) < 3.0


def test_overload_and_cascade_load_the_host(busy_series: TelemetrySeries) -> None:
    s = busy_series
    healthy_cpu = float(s.features[~s.labels][:, 6].median())
    for kind in (FaultKind.OVERLOAD, FaultKind.CASCADE):
        assert float(s.features[s.fault_kind == kind][:, 6].median()) > healthy_cpu + 10.0


def test_edge_index_lists_live_links_both_ways(busy_series: TelemetrySeries) -> None:
    edge_index = busy_series.edge_index(10)
    live = int(busy_series.link_active[10].sum())

    assert edge_index.shape == (2, 2 * live)
    pairs = set(map(tuple, edge_index.T.tolist()))
    assert all((b, a) in pairs for a, b in pairs)


def test_edge_index_outside_the_series_is_refused(busy_series: TelemetrySeries) -> None:
    with pytest.raises(ValueError, match="step 120 is outside the series"):
        busy_series.edge_index(120)


@pytest.mark.parametrize(
    ("steps", "seed", "message"), [(0, 1, "steps must be >= 1"), (5, -1, "seed must be >= 0")]
)
def test_bad_arguments_are_refused(steps: int, seed: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(SMALL, steps=steps, seed=seed)


def test_zone_mixes_differ() -> None:
    s = simulate(SMALL, steps=2, seed=1)
    mix = s.zone_mix.numpy()

    np.testing.assert_allclose(mix.sum(axis=1), 1.0, rtol=1e-5)
    assert float(mix.max(axis=0).min()) > 0.0
    assert float(np.ptp(mix, axis=0).max()) > 0.2
