"""fedmesh.client."""
