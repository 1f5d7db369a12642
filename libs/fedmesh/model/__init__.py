"""fedmesh.model."""
