"""gRPC plumbing: server factory, channel factory, error translation, TLS."""

from fedmesh.rpc.channel import DEFAULT_TIMEOUT_S, open_channel
from fedmesh.rpc.errors import status_of, translate_errors
from fedmesh.rpc.limits import CHUNK_BYTES, MAX_MESSAGE_BYTES
from fedmesh.rpc.readiness import all_of, peer_probe, redis_probe
from fedmesh.rpc.server import RunningServer, ServiceBinding, serve_until_signal, start_server
from fedmesh.rpc.tls import TlsFiles

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "RunningServer",
    "ServiceBinding",
    "TlsFiles",
    "all_of",
    "open_channel",
    "peer_probe",
    "redis_probe",
    "serve_until_signal",
    "start_server",
    "status_of",
    "translate_errors",
]
