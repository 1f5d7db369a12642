"""Errors raised by the aggregation rules; both map onto the project's domain errors."""

from __future__ import annotations

from fedmesh.errors import FailedPrecondition, InvalidArgument


class InsufficientUpdatesError(FailedPrecondition, ValueError):
    """Too few updates for the rule to tolerate f Byzantine ones."""


class InvalidUpdatesError(InvalidArgument, ValueError):
    """The updates or their weights are malformed: wrong shape, dtype, NaN or Inf."""
