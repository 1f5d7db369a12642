"""TLS material for servers and channels (mTLS outside the dev profile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: this party's certificate chain and key, and the CA that signs peers."""

    cert_chain: Path
    private_key: Path
    ca: Path

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate."""
        return grpc.ssl_server_credentials(
            [(self.private_key.read_bytes(), self.cert_chain.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials presenting this party's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.private_key.read_bytes(),
            certificate_chain=self.cert_chain.read_bytes(),
        )
