"""`fedmesh certs …`: a development CA and SPIFFE-identified mTLS certificates."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedmesh.cli.stack import SERVICES
from fedmesh.rpc.certs import DevCertificateAuthority, spiffe_id

app = typer.Typer(help="Development certificates (mTLS with SPIFFE IDs).", no_args_is_help=True)
console = Console()
DIRECTORY = typer.Option(Path("certs"), "--dir", help="Where the CA and certificates live.")


@app.command()
def init(
    directory: Path = DIRECTORY,
    host: list[str] = typer.Option(["localhost", "127.0.0.1"], help="Server DNS names or IPs."),
    admin: str = typer.Option("operator", help="Name of the admin identity to issue."),
) -> None:
    """Create the CA and a certificate for each service and one admin."""
    authority = DevCertificateAuthority.create(directory)
    table = Table(title=f"Certificates in {directory}")
    for column in ("identity", "certificate", "key"):
        table.add_column(column)
    issued = [("service", name) for name in SERVICES] + [("admin", admin)]
    for kind, name in issued:
        files = authority.issue(kind, name, tuple(host))
        table.add_row(spiffe_id(kind, name), str(files.cert_chain), str(files.private_key))
    console.print(table)
    console.print(
        f"Trust {authority.ca_path}; set FEDMESH_TLS_CERT, FEDMESH_TLS_KEY, FEDMESH_TLS_CA."
    )


@app.command()
def node(node_id: str, directory: Path = DIRECTORY) -> None:
    """Issue a node's certificate (its identity is spiffe://fedmesh.local/node/NODE_ID)."""
    authority = DevCertificateAuthority(directory)
    if not authority.ca_path.exists():
        console.print(f"[red]no CA in {directory}; run `fedmesh certs init` first[/red]")
        raise typer.Exit(2)
    files = authority.issue("node", node_id)
    console.print(f"{spiffe_id('node', node_id)}: {files.cert_chain} {files.private_key}")
