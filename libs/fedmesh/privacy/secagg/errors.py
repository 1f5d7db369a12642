"""Errors of the secure-aggregation protocol, each mapped to a status by the RPC edge."""

from __future__ import annotations

from fedmesh.errors import AlreadyExists, FailedPrecondition, InvalidArgument


class SecAggAbort(FailedPrecondition):
    """The round cannot complete securely (too few survivors or shares); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"secure aggregation aborted: {reason}")
        self.reason = reason


class InvalidSecAggMessage(InvalidArgument):
    """A protocol message is malformed, misaddressed or fails authentication."""


class SecAggStageError(FailedPrecondition):
    """A message or call arrived in a stage that does not accept it."""


class ConflictingSecAggMessage(AlreadyExists):
    """A party sent a different message for a stage it already completed."""
