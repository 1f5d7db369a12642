"""``python -m fedmesh.services.registry`` starts the registry service."""

from fedmesh.services.registry.server import main

main()
