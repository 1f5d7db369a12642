"""fedmesh.rpc."""
