import warnings

import pytest

with warnings.catch_warnings():
    # torch_geometric calls torch.jit.script at import, which torch 2.13 deprecates; the
    # warning is attributed to torch.jit, so pyproject's torch_geometric filter misses it.
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    import torch_geometric  # noqa: F401

from fedmesh.mesh import FaultRates, MeshConfig, TelemetrySeries, simulate


@pytest.fixture(scope="session")
def busy_config() -> MeshConfig:
    """Faults ten times as often as by default, so a short series holds every kind."""
    return MeshConfig(num_nodes=150, faults=FaultRates(onset_rate=5e-3))


@pytest.fixture(scope="session")
def busy_series(busy_config: MeshConfig) -> TelemetrySeries:
    return simulate(busy_config, steps=120, seed=7)
