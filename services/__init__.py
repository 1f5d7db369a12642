"""The four fedmesh gRPC services, imported as ``fedmesh.services.<name>``."""
