"""``python -m fedmesh.services.alerting`` starts the alerting service."""

from fedmesh.services.alerting.server import main

main()
