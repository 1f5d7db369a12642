"""fedmesh.cli."""
