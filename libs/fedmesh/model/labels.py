"""Ground-truth vocabulary: the fault kinds a node can be labelled with."""

from __future__ import annotations

from enum import IntEnum


class FaultKind(IntEnum):
    """Why a node is anomalous at a time step; ``NONE`` marks a healthy node."""

    NONE = 0
    LINK_DEGRADATION = 1
    OVERLOAD = 2
    CASCADE = 3
    INTERFERENCE = 4
    PARTITION = 5

    @property
    def label(self) -> str:
        """The lower-case name used in metrics and reports, e.g. ``link_degradation``."""
        return self.name.lower()


FAULT_KINDS: tuple[FaultKind, ...] = tuple(k for k in FaultKind if k is not FaultKind.NONE)
"""Every real fault kind, in code order."""
