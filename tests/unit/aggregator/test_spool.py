"""UpdateSpool on a real directory: memory below the threshold, files and maps above it."""

import hashlib
import os
from pathlib import Path

import pytest

from fedmesh.errors import DataLoss
from fedmesh.services.aggregator.spool import SpoolKey, UpdateSpool

DIGEST = "a" * 64


async def spooled(spool: UpdateSpool, key: SpoolKey, payload: bytes) -> bool:
    writer = spool.begin(len(payload))
    for start in range(0, len(payload), 5):
        writer.write(payload[start : start + 5])
    return await spool.commit(writer, key)


def read(spool: UpdateSpool, key: SpoolKey) -> bytes:
    with spool.open(key) as update:
        return bytes(update.buffer)


async def test_a_small_update_is_kept_in_memory_and_on_disk(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=100)
    key = SpoolKey("run", 1, "n1", DIGEST)

    created = await spooled(spool, key, b"x" * 99)
    spool.path_of(key).write_bytes(b"y" * 99)  # the memory copy is what a live spool reads

    assert created is True
    assert read(spool, key) == b"x" * 99
    assert (spool.count, spool.total_bytes) == (1, 99)


async def test_a_large_update_is_read_back_from_its_file(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=100)
    key = SpoolKey("run", 1, "n1", DIGEST)
    payload = bytes(range(256)) * 2

    await spooled(spool, key, payload)
    spool.path_of(key).write_bytes(payload[::-1])

    assert read(spool, key) == payload[::-1]
    assert list((tmp_path / "incoming").iterdir()) == []


async def test_committing_the_same_key_twice_keeps_one_copy(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=0)
    key = SpoolKey("run", 1, "n1", DIGEST)

    first = await spooled(spool, key, b"payload")
    second = await spooled(spool, key, b"payload")

    assert (first, second) == (True, False)
    assert spool.count == 1
    assert list((tmp_path / "incoming").iterdir()) == []
    assert list((tmp_path / "rounds").rglob("*.update")) == [spool.path_of(key)]


async def test_a_discarded_upload_leaves_no_file(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=100)
    writer = spool.begin(10)
    writer.write(b"12345")

    writer.discard()

    assert list((tmp_path / "incoming").iterdir()) == []
    assert spool.count == 0


@pytest.mark.parametrize("node", ["..", "spiffe://fedmesh.local/node/a b", "ü/../..", "x" * 180])
async def test_any_id_maps_to_a_file_inside_the_spool_and_survives_a_rescan(
    tmp_path: Path, node: str
) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=0)
    key = SpoolKey("../run", 2, node, DIGEST)

    await spooled(spool, key, b"data")
    restarted = UpdateSpool(tmp_path, memory_threshold_bytes=0)
    strays = restarted.rescan()

    assert spool.path_of(key).resolve().is_relative_to((tmp_path / "rounds").resolve())
    assert strays == []
    assert restarted.spooled_keys() == [key]
    assert read(restarted, key) == b"data"


async def test_a_rescan_trusts_only_the_disk_and_reports_strays(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=100)
    key = SpoolKey("run", 1, "n1", DIGEST)
    await spooled(spool, key, b"small")
    spool.path_of(key).write_bytes(b"other")
    stray = spool.path_of(key).with_name("notes.txt")
    stray.write_text("hello")

    strays = spool.rescan()

    assert strays == [stray]
    assert read(spool, key) == b"other"


async def test_verify_detects_a_damaged_or_missing_file(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=0)
    good = SpoolKey("run", 1, "n1", hashlib.sha256(b"good").hexdigest())
    await spooled(spool, good, b"good")
    assert await spool.verify(good) is True

    spool.path_of(good).write_bytes(b"evil")
    assert await spool.verify(good) is False

    spool.path_of(good).unlink()
    assert await spool.verify(good) is False


async def test_opening_a_lost_update_is_data_loss(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=0)
    key = SpoolKey("run", 1, "n1", DIGEST)
    await spooled(spool, key, b"data")
    spool.path_of(key).unlink()

    with pytest.raises(DataLoss, match=f"the spooled update {DIGEST} of node 'n1' for round 1"):
        spool.open(key)


async def test_removing_a_round_deletes_its_files_only(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=100)
    gone = [SpoolKey("run", 1, node, DIGEST) for node in ("a", "b")]
    kept = SpoolKey("run", 2, "a", DIGEST)
    for key in [*gone, kept]:
        await spooled(spool, key, b"data")

    await spool.remove_round("run", 1)

    assert spool.spooled_keys() == [kept]
    assert not spool.round_dir("run", 1).exists()
    assert spool.path_of(kept).exists()


def test_partial_uploads_are_cleared(tmp_path: Path) -> None:
    spool = UpdateSpool(tmp_path, memory_threshold_bytes=100)
    (tmp_path / "incoming" / "cut-off.part").write_bytes(b"half")

    removed = spool.clear_incoming()

    assert removed == 1
    assert os.listdir(tmp_path / "incoming") == []
