from fedmesh.services.coordinator.server import main

main()
