"""fedmesh.aggregation."""
