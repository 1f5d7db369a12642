import pytest
import torch

from fedmesh.mesh import TelemetrySeries, snapshot_graphs, split_regions, split_windows
from fedmesh.model import normalise


def test_windows_are_consecutive_and_sized() -> None:
    windows = split_windows(100, validation_fraction=0.2, test_fraction=0.25)

    assert windows.train == range(0, 55)
    assert windows.validation == range(55, 75)
    assert windows.test == range(75, 100)


@pytest.mark.parametrize(
    ("steps", "validation", "test", "message"),
    [
        (100, 0.5, 0.5, "must be < 1 to leave steps for training"),
        (100, 0.0, 0.2, r"must each be in \(0, 1\)"),
        (2, 0.2, 0.2, "2 steps are too few"),
    ],
)
def test_bad_windows_are_refused(steps: int, validation: float, test: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_windows(steps, validation, test)


def test_region_graph_holds_the_region_at_one_step(busy_series: TelemetrySeries) -> None:
    region = split_regions(busy_series, 3, seed=0)[1]

    graphs = snapshot_graphs(busy_series, region, range(40, 50))

    assert len(graphs) == 10
    g = graphs[3]
    n = region.size
    assert g.step == 43
    assert torch.equal(g.node_id, region.nodes)
    assert g.x.shape == (n, 8)
    assert torch.allclose(g.x, normalise(busy_series.features[43, region.nodes]))
    assert torch.equal(g.y, busy_series.labels[43, region.nodes].float())
    assert torch.equal(g.fault_kind, busy_series.fault_kind[43, region.nodes])
    assert int(g.edge_index.min()) >= 0
    assert int(g.edge_index.max()) < n


def test_region_edges_are_the_live_links_inside_it(busy_series: TelemetrySeries) -> None:
    region = split_regions(busy_series, 3, seed=0)[0]
    g = snapshot_graphs(busy_series, region, range(7, 8))[0]

    pairs = {tuple(sorted(p)) for p in region.nodes[g.edge_index].T.tolist()}
    inside = set(region.nodes.tolist())
    live = busy_series.mesh.links[busy_series.link_active[7]].tolist()
    expected = {(a, b) for a, b in live if a in inside and b in inside}
    assert pairs == expected
    assert g.edge_index.shape[1] == 2 * len(expected)


def test_whole_mesh_when_no_region(busy_series: TelemetrySeries) -> None:
    g = snapshot_graphs(busy_series, None, range(5, 6))[0]

    assert g.x.shape == (busy_series.num_nodes, 8)
    assert torch.equal(g.edge_index, busy_series.edge_index(5))


def test_faults_seen_before_the_window_are_not_scored(busy_series: TelemetrySeries) -> None:
    s = busy_series
    window = range(60, 120)
    graphs = snapshot_graphs(s, None, window)
    mask = torch.stack([g.mask for g in graphs])
    instance = s.fault_instance[60:120]
    started = torch.tensor([f.start for f in s.faults])

    old = (instance >= 0) & (started[instance.clamp_min(0)] < 60)
    assert bool(old.any())
    assert torch.equal(mask, ~old)
    # The first window has nothing earlier to hide.
    assert all(bool(g.mask.all()) for g in snapshot_graphs(s, None, range(0, 60)))


@pytest.mark.parametrize("window", [range(0, 0), range(100, 130), range(0, 10, 2)])
def test_bad_window_is_refused(busy_series: TelemetrySeries, window: range) -> None:
    with pytest.raises(ValueError, match="must be a non-empty contiguous range"):
        snapshot_graphs(busy_series, None, window)
