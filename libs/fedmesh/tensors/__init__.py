"""fedmesh.tensors."""
