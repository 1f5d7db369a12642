"""SecAgg+ secure aggregation (Bell et al. 2020) as pure state machines; bucketed secure sums."""

from fedmesh.privacy.secagg.bucketing import BucketPlan, bucket_means, plan_buckets
from fedmesh.privacy.secagg.client import ClientStage, SecAggClient
from fedmesh.privacy.secagg.config import SecAggConfig
from fedmesh.privacy.secagg.errors import (
    ConflictingSecAggMessage,
    InvalidSecAggMessage,
    SecAggAbort,
    SecAggStageError,
)
from fedmesh.privacy.secagg.graph import (
    NeighbourGraph,
    default_degree,
    degree_for_dropout,
    harary_graph,
)
from fedmesh.privacy.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    NeighbourKeys,
    RevealedShare,
    ShareDelivery,
    UnmaskingRequest,
    UnmaskingShares,
)
from fedmesh.privacy.secagg.quantize import FixedPointCodec
from fedmesh.privacy.secagg.server import SecAggResult, SecAggServer, ServerStage

__all__ = [
    "BucketPlan",
    "ClientStage",
    "ConflictingSecAggMessage",
    "EncryptedShare",
    "FixedPointCodec",
    "InvalidSecAggMessage",
    "KeyAdvertisement",
    "KeyShares",
    "MaskedInput",
    "NeighbourGraph",
    "NeighbourKeys",
    "RevealedShare",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "SecAggStageError",
    "ServerStage",
    "ShareDelivery",
    "UnmaskingRequest",
    "UnmaskingShares",
    "bucket_means",
    "default_degree",
    "degree_for_dropout",
    "harary_graph",
    "plan_buckets",
]
