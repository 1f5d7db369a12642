"""fedmesh: the federated-learning plane of a self-healing wireless mesh network."""
