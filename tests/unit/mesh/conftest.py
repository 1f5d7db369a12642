import pytest

from fedmesh.mesh import FaultRates, MeshConfig, TelemetrySeries, simulate


@pytest.fixture(scope="session")
def busy_config() -> MeshConfig:
    """Faults ten times as often as by default, so a short series holds every kind."""
    return MeshConfig(num_nodes=150, faults=FaultRates(onset_rate=5e-3))


@pytest.fixture(scope="session")
def busy_series(busy_config: MeshConfig) -> TelemetrySeries:
    return simulate(busy_config, steps=120, seed=7)
