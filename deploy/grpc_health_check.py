"""Container health probe: exit 0 only when a gRPC server answers the health check SERVING.

Used by the docker-compose healthchecks and, when mTLS is on, by the Kubernetes exec
probes (kubelet's native gRPC probe cannot present a client certificate). With
FEDMESH_TLS_CERT/KEY/CA set it connects with this container's own certificate, the
same files the service itself serves with.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_UNREACHABLE = 2


def _credentials() -> grpc.ChannelCredentials | None:
    paths = [os.environ.get(f"FEDMESH_TLS_{part}") for part in ("CERT", "KEY", "CA")]
    if not any(paths):
        return None
    cert, key, ca = (Path(p).read_bytes() if p else None for p in paths)
    if cert is None or key is None or ca is None:
        raise SystemExit(
            "FEDMESH_TLS_CERT, FEDMESH_TLS_KEY and FEDMESH_TLS_CA must be set together"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def check(address: str, service: str = "", server_name: str = "", timeout: float = 3.0) -> int:
    """Ask ``address`` for the health of ``service`` ("" = the whole server); an exit code."""
    credentials = _credentials()
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            print(f"{address}: {err.code().name}: {err.details()}", file=sys.stderr)
            return EXIT_UNREACHABLE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{address}: {status}", file=sys.stderr)
        return EXIT_NOT_SERVING
    return EXIT_SERVING


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one check."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="service name; empty = the server")
    parser.add_argument(
        "--server-name", default="", help="TLS name to verify instead of the address host"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        return check(args.address, args.service, args.server_name, args.timeout)
    except OSError as err:  # a TLS file that is missing or unreadable
        print(f"{args.address}: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
