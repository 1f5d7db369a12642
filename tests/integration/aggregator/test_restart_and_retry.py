"""Exactly once across failures: a restarted aggregator, a cut connection, readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import torch

from fedmesh.client.aggregator import AggregatorClient
from fedmesh.rpc import open_channel
from fedmesh.services.aggregator.server import readiness
from fedmesh.store import connect
from fedmesh.store.fencing import next_token
from fedmesh.tensors import digest_tensors, encode, manifest_of

from .conftest import signer_of

RUN = "run-1"


async def upload(client: AggregatorClient, aggregation: Any, node: str, seed: int) -> Any:
    return await client.submit_tensors(
        run_id=RUN,
        round_no=1,
        node_id=node,
        base_model=aggregation.base_ref,
        tensors=aggregation.delta(seed),
        num_samples=8,
        local_loss=0.2,
        chunk_bytes=64,
        signer=signer_of(node),
    )


async def test_a_restart_drops_receipts_whose_data_is_lost_and_accepts_the_retry(
    start_aggregator: Any,
) -> None:
    async with start_aggregator() as before:
        await before.open_round()
        await upload(before.client, before, "n1", 1)
        await upload(before.client, before, "n2", 2)
        lost = next(p for p in before.spool_files() if digest_tensors(before.delta(2)) in p.name)
    lost.unlink()

    async with start_aggregator() as after:
        receipts_after_restart = set((await after.rounds.get(RUN, 1)).receipts)
        retried = await upload(after.client, after, "n2", 2)
        repeated = await upload(after.client, after, "n1", 1)

    assert receipts_after_restart == {"n1"}
    assert retried.duplicate is False
    assert repeated.duplicate is True


class Relay:
    """A loopback TCP relay to the aggregator whose open connections can be cut at will."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            self.cut()
            server.close()
            await server.wait_closed()

    def cut(self) -> None:
        """Abort every open connection, both sides, as a network failure would."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()


async def test_an_upload_cut_midway_is_sent_again_and_accepted_once(aggregation: Any) -> None:
    # Past gRPC's own 256 KiB retry buffer, so the client's retry is what resends it.
    big_base = {"w": torch.zeros(128 * 1024)}
    await next_token(aggregation.redis)
    published = await aggregation.registry.publish_tensors("big-detector", big_base)
    await aggregation.open_round(base_ref=published.ref)
    tensors = {"w": torch.full((128 * 1024,), 0.25)}
    payload = encode(tensors)
    relay = Relay(aggregation.server.port)
    attempts: list[int] = []

    def chunks() -> AsyncIterator[bytes]:
        attempts.append(len(attempts) + 1)
        return cut_during_first(payload, relay, first=len(attempts) == 1)

    async with relay.running() as port, open_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        client = AggregatorClient(channel, initial_backoff=0.05)
        response = await client.submit_update(
            run_id=RUN,
            round_no=1,
            node_id="n1",
            manifest=manifest_of(tensors),
            digest=digest_tensors(tensors),
            num_samples=8,
            payload_bytes=len(payload),
            base_model=published.ref,
            local_loss=0.2,
            chunks=chunks,
            signer=signer_of("n1"),
        )

    # The cut attempt's handler may still be winding down; it must leave nothing behind.
    incoming = aggregation.settings.spool_dir / "incoming"
    for _ in range(200):
        if not any(incoming.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert attempts == [1, 2]
    assert relay.connections == 2
    assert (response.digest, response.duplicate) == (digest_tensors(tensors), False)
    assert set((await aggregation.rounds.get(RUN, 1)).receipts) == {"n1"}
    assert [p.name for p in aggregation.spool_files()] == [f"{digest_tensors(tensors)}.update"]


async def cut_during_first(payload: bytes, relay: Relay, first: bool) -> AsyncIterator[bytes]:
    """The payload in 64 KiB chunks; on the first attempt the network fails after 384 KiB."""
    for index, start in enumerate(range(0, len(payload), 64 << 10)):
        if first and index == 6:
            relay.cut()
        yield payload[start : start + (64 << 10)]


async def test_ready_only_while_redis_and_the_registry_answer(aggregation: Any) -> None:
    live = open_channel(aggregation.settings.common.registry_address)
    dead = open_channel("127.0.0.1:1")
    no_redis = connect("redis://127.0.0.1:1/0")
    try:
        both = await readiness(aggregation.redis, live)()
        without_registry = await readiness(aggregation.redis, dead)()
        without_redis = await readiness(no_redis, live)()
    finally:
        await live.close()
        await dead.close()
        await no_redis.aclose()

    assert (both, without_registry, without_redis) == (True, False, False)
