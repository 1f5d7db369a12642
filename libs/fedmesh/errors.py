"""Domain errors; `fedmesh.rpc.errors` maps each to its gRPC status (DESIGN §3)."""

from __future__ import annotations


class FedmeshError(Exception):
    """Base of every error the services report to callers; the message is public."""


class InvalidArgument(FedmeshError):
    """Bad input whatever the state: NaN/Inf, wrong shape or dtype, malformed spec."""


class FailedPrecondition(FedmeshError):
    """The request is valid but the state forbids it: round closed, node not selected."""


class AlreadyExists(FedmeshError):
    """A different object already holds this natural key."""


class NotFound(FedmeshError):
    """The named run, round, node, model or alert does not exist."""


class ResourceExhausted(FedmeshError):
    """Over a size or rate limit."""


class Unauthenticated(FedmeshError):
    """The caller has no verifiable identity."""


class PermissionDenied(FedmeshError):
    """The caller's identity may not do this."""


class Aborted(FedmeshError):
    """Lost a compare-and-set or a lease; the caller may retry."""


class Unavailable(FedmeshError):
    """A dependency is down; retryable."""


class DataLoss(FedmeshError):
    """Stored data failed verification (tampered or corrupt)."""
