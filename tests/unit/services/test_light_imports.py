"""The coordinator, registry and alerting start without torch (DESIGN: small and fast)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("service", ["coordinator", "registry", "alerting"])
def test_service_wiring_imports_without_torch(service: str) -> None:
    probe = f"import sys, fedmesh.services.{service}.server; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"


def test_the_aggregator_does_load_torch() -> None:
    probe = "import sys, fedmesh.services.aggregator.server; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "True"
