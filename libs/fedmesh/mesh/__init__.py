"""fedmesh.mesh."""
