"""DownloadModel: ranges, aliases, resumable downloads to a file, and resuming after a cut."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from fedmesh.client.registry import RegistryClient
from fedmesh.errors import DataLoss, InvalidArgument, NotFound
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.rpc import open_channel
from fedmesh.tensors import encode

ModelFactory = Callable[..., dict[str, torch.Tensor]]


async def test_download_from_an_offset_returns_the_tail(
    registry: Any, make_model: ModelFactory
) -> None:
    tensors = make_model(1)
    await registry.client.publish_tensors("detector", tensors)

    tail = await registry.client.download("detector", 1, offset=5000)

    assert tail == encode(tensors)[5000:]


async def test_download_by_alias_and_latest(registry: Any, make_model: ModelFactory) -> None:
    first, second = make_model(1), make_model(2)
    await registry.client.publish_tensors("detector", first)
    await registry.client.publish_tensors("detector", second)
    await registry.client.promote("detector", 1, alias="candidate")

    assert await registry.client.download("detector", alias="candidate") == encode(first)
    assert await registry.client.download("detector") == encode(second)


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        (
            {"version": 1, "offset": 10**9},
            grpc.StatusCode.INVALID_ARGUMENT,
            "offset 1000000000 is outside version 1 of model 'detector', which has {size} bytes",
        ),
        (
            {"version": 1, "offset": -1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "offset -1 is outside version 1 of model 'detector', which has {size} bytes",
        ),
        (
            {"version": 1, "chunk_bytes": 100},
            grpc.StatusCode.INVALID_ARGUMENT,
            "chunk_bytes 100 is out of range; expected 0 (default) or 4096..4194304",
        ),
        (
            {"version": 1, "alias": "production"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "give a version or an alias, not both (version 1, alias 'production')",
        ),
        (
            {"alias": "production"},
            grpc.StatusCode.NOT_FOUND,
            "model 'detector' has no alias 'production'",
        ),
        (
            {"version": 7},
            grpc.StatusCode.NOT_FOUND,
            "model 'detector' has no version 7; its latest is 1",
        ),
        (
            {"version": -2},
            grpc.StatusCode.INVALID_ARGUMENT,
            "version -2 is negative; versions start at 1",
        ),
        (
            {"alias": "Prod!"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "alias 'Prod!' is invalid; expected 1-32 lowercase letters, digits or '-', starting "
            "with a letter (e.g. 'production', 'candidate')",
        ),
    ],
)
async def test_bad_download_requests_are_refused_before_any_message(
    registry: Any,
    make_model: ModelFactory,
    request_fields: dict[str, Any],
    code: grpc.StatusCode,
    message: str,
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))
    call = registry.stub.DownloadModel(pb.DownloadModelRequest(name="detector", **request_fields))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()

    assert info.value.code() == code
    assert info.value.details() == message.format(size=len(encode(make_model(1))))


async def test_download_of_an_unknown_model_is_not_found(registry: Any) -> None:
    with pytest.raises(NotFound, match=r"^model 'ghost' has no versions$"):
        await registry.client.download("ghost")


async def test_download_to_continues_a_partial_file(
    registry: Any, make_model: ModelFactory, tmp_path: Path
) -> None:
    tensors = make_model(1, rows=256)
    version = await registry.client.publish_tensors("detector", tensors)
    payload = encode(tensors)
    target = tmp_path / "model.safetensors"
    partial = tmp_path / f"model.safetensors.{version.ref.digest[:16]}.partial"
    partial.write_bytes(payload[:20_000])
    seen: list[tuple[int, int]] = []

    result = await registry.client.download_to(
        target, "detector", on_progress=lambda done, total: seen.append((done, total))
    )

    assert (result.resumed_from, result.bytes_received) == (20_000, len(payload) - 20_000)
    assert result.version.ref.version == 1
    assert target.read_bytes() == payload
    assert not partial.exists()
    assert seen[0][0] > 20_000
    assert seen[-1] == (len(payload), len(payload))


async def test_download_to_refuses_a_corrupt_partial_and_removes_it(
    registry: Any, make_model: ModelFactory, tmp_path: Path
) -> None:
    tensors = make_model(1)
    version = await registry.client.publish_tensors("detector", tensors)
    target = tmp_path / "model.safetensors"
    partial = tmp_path / f"model.safetensors.{version.ref.digest[:16]}.partial"
    partial.write_bytes(b"\xff" * 1000)

    with pytest.raises(DataLoss) as info:
        await registry.client.download_to(target, "detector")
    again = await registry.client.download_to(target, "detector")

    assert str(info.value) == (
        f"downloaded file of version 1 of 'detector' does not hash to its digest "
        f"{version.ref.digest}; the partial file was removed"
    )
    assert again.resumed_from == 0
    assert target.read_bytes() == encode(tensors)


async def test_download_with_a_bad_offset_raises_the_domain_error(
    registry: Any, make_model: ModelFactory
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))

    with pytest.raises(InvalidArgument, match=r"^offset 9000 is outside version 1"):
        await registry.client.download("detector", offset=9000)


class CuttingProxy:
    """TCP proxy that cuts its first connection after forwarding ``cut_after`` bytes down."""

    def __init__(self, target: str, cut_after: int) -> None:
        self._target_host, port = target.rsplit(":", 1)
        self._target_port = int(port)
        self._cut_after = cut_after
        self.connections = 0
        self.downstream_bytes = 0

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        cut = self.connections == 1
        up_reader, up_writer = await asyncio.open_connection(self._target_host, self._target_port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, down: bool
        ) -> None:
            try:
                while data := await source.read(16384):
                    sink.write(data)
                    await sink.drain()
                    if down:
                        self.downstream_bytes += len(data)
                        if cut and self.downstream_bytes >= self._cut_after:
                            break
            except ConnectionError:
                pass
            finally:
                for end in (writer, up_writer):
                    end.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


async def test_download_to_resumes_after_the_connection_is_cut(
    registry: Any, make_model: ModelFactory, tmp_path: Path
) -> None:
    tensors = make_model(1, rows=1024)
    await registry.client.publish_tensors("detector", tensors)
    payload = encode(tensors)
    proxy = CuttingProxy(registry.address, cut_after=len(payload) // 2)
    target = tmp_path / "model.safetensors"

    async with proxy.serve() as address, open_channel(address) as channel:
        result = await RegistryClient(channel, chunk_bytes=4096).download_to(target, "detector")

    assert target.read_bytes() == payload
    assert result.resumed_from == 0
    assert proxy.connections >= 2
    # Resumed, not restarted: well under the half that was cut plus a whole second copy.
    assert proxy.downstream_bytes < 1.3 * len(payload)
