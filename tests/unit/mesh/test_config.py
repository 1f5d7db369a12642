import math

import pytest

from fedmesh.mesh import FaultRates, MeshConfig, RadioConstants, TrafficConstants


def test_default_area_follows_the_density() -> None:
    config = MeshConfig(num_nodes=400, density_per_km2=250.0)

    assert config.side_m == pytest.approx(math.sqrt(400 / 250.0) * 1000.0)
    assert config.num_gateways == 20


def test_explicit_area_wins_over_density() -> None:
    assert MeshConfig(num_nodes=10, area_km2=4.0).side_m == pytest.approx(2000.0)


def test_at_least_one_gateway() -> None:
    assert MeshConfig(num_nodes=5, gateway_fraction=0.01).num_gateways == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_nodes": 1}, "num_nodes must be >= 2; got 1"),
        ({"area_km2": 0.0}, "area_km2 must be > 0; got 0.0"),
        ({"gateway_fraction": 0.0}, r"gateway_fraction must be in \(0, 1\]; got 0.0"),
        ({"step_seconds": -1.0}, "step_seconds must be > 0; got -1.0"),
        (
            {"radio": RadioConstants(sensitivity_dbm=-70.0)},
            "rssi_floor_dbm < sensitivity_dbm < link_threshold_dbm",
        ),
        (
            {"traffic": TrafficConstants(cpu_base_range=(50.0, 10.0))},
            r"cpu_base_range must be a range \(0.0 <= low <= high\); got \(50.0, 10.0\)",
        ),
        (
            {"faults": FaultRates(kind_weights=(1.0, 1.0))},
            "kind_weights needs 5 non-negative weights",
        ),
        (
            {"faults": FaultRates(duration_steps=(0, 5))},
            r"duration_steps must be a range \(1 <= low <= high\)",
        ),
        ({"faults": FaultRates(onset_rate=1.5)}, r"onset_rate must be in \[0, 1\); got 1.5"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MeshConfig(**kwargs)  # type: ignore[arg-type]
