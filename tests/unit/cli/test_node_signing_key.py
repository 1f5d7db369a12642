"""`fedmesh node --signing-key`: a key file it cannot trust stops it before it starts."""

from pathlib import Path

from typer.testing import CliRunner

from fedmesh.cli.main import app
from fedmesh.cli.node import default_key_path


def test_a_key_file_others_may_read_stops_the_node_with_why(tmp_path: Path) -> None:
    key = tmp_path / "node.pem"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)

    result = CliRunner().invoke(
        app, ["node", "--node-id", "n1", "--signing-key", str(key)], catch_exceptions=False
    )

    # The error box wraps lines anywhere: compare without box edges and whitespace.
    shown = "".join(result.output.replace("│", "").split())
    assert result.exit_code == 2
    assert f"signingkey{key}hasmode0644;otheruserscoulduseit." in shown


def test_the_default_key_file_is_per_node_under_the_home_directory() -> None:
    assert default_key_path("spiffe://fedmesh/node/n 1") == (
        Path.home() / ".fedmesh" / "spiffe___fedmesh_node_n_1.ed25519.pem"
    )
