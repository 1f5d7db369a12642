from fedmesh.services.aggregator.server import main

main()
