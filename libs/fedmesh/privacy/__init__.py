"""fedmesh.privacy."""
