"""What the rule sees as one row, and which receipts stand behind it."""

from __future__ import annotations

from dataclasses import dataclass

from fedmesh.store import Receipt


@dataclass(frozen=True)
class Contribution:
    """One row the rule sees: a node's update, or a bucket's mean in a secure round."""

    node_id: str
    digest: str
    receipts: tuple[Receipt, ...]
    label: str

    def explain(self, reason: str) -> str:
        """The rule's reason, naming the bucket's members when the row is a bucket."""
        if self.node_id:
            return reason
        members = ", ".join(r.node_id for r in self.receipts)
        return f"{self.label} ({members}): {reason}"


def node_contribution(receipt: Receipt) -> Contribution:
    """A plain round's row: one node's spooled update."""
    return Contribution(receipt.node_id, receipt.digest, (receipt,), receipt.node_id)
