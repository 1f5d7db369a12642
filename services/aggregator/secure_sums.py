"""The unmasked bucket sums of secure rounds, on disk until the round is aggregated.

Layout under the spool's ``secure`` directory::

    <run>/<round>/bucket-<b>.sum     the bucket's exact sum mod 2^32 (uint32 LE words)
    <run>/<round>/summary.json       contributors, codec and digests; written last

Only sums of at least a bucket's `min_survivors` inputs are ever written: no
single node's update exists here, masked or not. `summary.json` appears (by an
atomic rename after every sum is fsynced) only when the whole round is stored,
so a crash mid-write leaves a round that reconciliation deletes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedmesh.durable import fsync_dir
from fedmesh.errors import DataLoss
from fedmesh.privacy.secagg import FixedPointCodec
from fedmesh.privacy.secagg.quantize import WORD

_SUMMARY = "summary.json"


@dataclass(frozen=True)
class BucketSum:
    """One bucket's stored sum: who contributed, who dropped, and the digest of the words."""

    bucket: int
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]
    digest: str


@dataclass(frozen=True)
class SecureSums:
    """A secure round's stored outcome: the completed buckets and why the others aborted."""

    run_id: str
    round_no: int
    vector_length: int
    clip_range: float
    max_summands: int
    buckets: tuple[BucketSum, ...]
    aborted: dict[int, str]

    @property
    def codec(self) -> FixedPointCodec:
        """The codec the nodes quantised with."""
        return FixedPointCodec(self.clip_range, self.max_summands)

    @property
    def contributors(self) -> tuple[str, ...]:
        """Every node whose input is in one of the stored sums."""
        return tuple(node for bucket in self.buckets for node in bucket.contributors)


@dataclass(frozen=True)
class UnmaskedBucket:
    """A completed bucket as the session hands it over."""

    bucket: int
    total: NDArray[np.uint32]
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]


def _round_dir(root: Path, run_id: str, round_no: int) -> Path:
    run_part = base64.urlsafe_b64encode(run_id.encode()).decode().rstrip("=")
    return root / run_part / str(round_no)


class SecureSumStore:
    """Writes, reads and removes the stored sums of secure rounds (blocking; call in a thread)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    def store(
        self,
        run_id: str,
        round_no: int,
        codec: FixedPointCodec,
        vector_length: int,
        completed: Sequence[UnmaskedBucket],
        aborted: dict[int, str],
    ) -> SecureSums:
        """Write every completed bucket's sum, then the summary; return what was stored."""
        directory = _round_dir(self._root, run_id, round_no)
        directory.mkdir(parents=True, exist_ok=True)
        buckets = []
        for unmasked in completed:
            raw = np.ascontiguousarray(unmasked.total, dtype=WORD).tobytes()
            path = directory / f"bucket-{unmasked.bucket}.sum"
            with path.open("wb") as file:
                file.write(raw)
                file.flush()
                os.fsync(file.fileno())
            buckets.append(
                BucketSum(
                    bucket=unmasked.bucket,
                    contributors=unmasked.contributors,
                    dropped=unmasked.dropped,
                    digest=hashlib.sha256(raw).hexdigest(),
                )
            )
        sums = SecureSums(
            run_id=run_id,
            round_no=round_no,
            vector_length=vector_length,
            clip_range=codec.clip_range,
            max_summands=codec.max_summands,
            buckets=tuple(buckets),
            aborted=dict(aborted),
        )
        staging = directory / f"{_SUMMARY}.part"
        staging.write_text(json.dumps(asdict(sums), sort_keys=True))
        with staging.open("rb") as file:
            os.fsync(file.fileno())
        staging.replace(directory / _SUMMARY)
        fsync_dir(directory)
        return sums

    def load(self, run_id: str, round_no: int) -> SecureSums | None:
        """The stored outcome of the round, or None when none was stored completely."""
        path = _round_dir(self._root, run_id, round_no) / _SUMMARY
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return SecureSums(
            run_id=data["run_id"],
            round_no=int(data["round_no"]),
            vector_length=int(data["vector_length"]),
            clip_range=float(data["clip_range"]),
            max_summands=int(data["max_summands"]),
            buckets=tuple(
                BucketSum(
                    bucket=int(b["bucket"]),
                    contributors=tuple(b["contributors"]),
                    dropped=tuple(b["dropped"]),
                    digest=b["digest"],
                )
                for b in data["buckets"]
            ),
            aborted={int(k): v for k, v in data["aborted"].items()},
        )

    def read(self, sums: SecureSums, bucket: BucketSum) -> NDArray[np.uint32]:
        """A bucket's sum, checked against its digest and length."""
        path = _round_dir(self._root, sums.run_id, sums.round_no) / f"bucket-{bucket.bucket}.sum"
        raw = path.read_bytes()
        if len(raw) != WORD.itemsize * sums.vector_length:
            raise DataLoss(
                f"secure sum of bucket {bucket.bucket} has {len(raw)} bytes; "
                f"expected {WORD.itemsize * sums.vector_length}"
            )
        if hashlib.sha256(raw).hexdigest() != bucket.digest:
            raise DataLoss(f"secure sum of bucket {bucket.bucket} does not hash to its digest")
        return np.frombuffer(raw, dtype=WORD).copy()

    def remove(self, run_id: str, round_no: int) -> None:
        """Delete the round's stored sums (after it was aggregated, or if it is abandoned)."""
        directory = _round_dir(self._root, run_id, round_no)
        shutil.rmtree(directory, ignore_errors=True)
        if directory.parent.exists() and not any(directory.parent.iterdir()):
            directory.parent.rmdir()

    def rounds(self) -> list[tuple[str, int]]:
        """Every (run, round) with a directory here, complete or not."""
        found = []
        for run_dir in sorted(p for p in self._root.iterdir() if p.is_dir()):
            run_id = base64.urlsafe_b64decode(run_dir.name + "=" * (-len(run_dir.name) % 4))
            for round_dir in sorted(p for p in run_dir.iterdir() if p.name.isdigit()):
                found.append((run_id.decode(), int(round_dir.name)))
        return found
