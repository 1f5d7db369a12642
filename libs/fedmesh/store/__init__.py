"""fedmesh.store."""
