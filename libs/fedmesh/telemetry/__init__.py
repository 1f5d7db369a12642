"""fedmesh.telemetry."""
