"""Transport: one update through the aggregator's SubmitUpdate vs raw grpcio bytes (the ceiling).

Run: .venv/bin/python bench/transport.py [--size-mib 256] [--repeats 3]

Both receivers run as separate processes on loopback: the real aggregator
(``python -m fedmesh.services.aggregator``, with an embedded Redis, a real round
record and a real registry process holding the base model), and a bare grpcio
server that counts the bytes of a client stream (``--serve-raw``). This process
is the client for both and streams the same payload in 1 MiB chunks; runs
alternate between the two. The aggregator's time covers everything it does
before answering: hashing, manifest and finiteness checks, writing the spool
file and its fsync, and the receipt in Redis. Each receiver's peak RSS during an
upload is read from /proc (VmHWM, reset before every upload). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedmesh.client.aggregator import AggregatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import SIGNING_KEYS_FIELD, NodeSigner
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.rpc import CHUNK_BYTES, MAX_MESSAGE_BYTES, open_channel
from fedmesh.store import EmbeddedRedis, Phase, RoundStore, connect
from fedmesh.tensors import Manifest, TensorSpec, digest_chunks, encode_header

RAW_SERVICE = "fedmesh.bench.RawUpload"
RAW_METHOD = f"/{RAW_SERVICE}/Upload"
RUN = "bench-transport"
MIB = 1 << 20
GOAL_RATIO = 0.8
GOAL_HEADROOM_MIB = 64


async def serve_raw() -> None:
    """The ceiling's receiver: count the bytes of a client stream, answer with the count."""

    async def upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
        total = 0
        async for chunk in requests:
            total += len(chunk)
        return total.to_bytes(8, "little")

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    handler = grpc.method_handlers_generic_handler(
        RAW_SERVICE, {"Upload": grpc.stream_unary_rpc_method_handler(upload)}
    )
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    await server.wait_for_termination()


class Receiver:
    """A child process that prints ``LISTENING <port>``; its memory is read from /proc."""

    def __init__(self, args: list[str], env: dict[str, str], log: TextIO) -> None:
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("LISTENING "):
                self.port = int(line.split()[1])
                return
        raise RuntimeError(f"{args} exited with {self.process.wait()} before listening")

    def _status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")

    def reset_peak(self) -> float:
        """Reset the peak RSS to the current RSS (clear_refs 5) and return it in MiB."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self._status_kib("VmRSS") / 1024

    def peak_mib(self) -> float:
        """Peak RSS since the last reset, in MiB."""
        return self._status_kib("VmHWM") / 1024

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def chunks_of(payload: bytes) -> Iterator[bytes]:
    """The payload in 1 MiB chunks, each a fresh bytes object (as both clients send it)."""
    view = memoryview(payload)
    for start in range(0, len(payload), CHUNK_BYTES):
        yield bytes(view[start : start + CHUNK_BYTES])


async def wait_serving(address: str, timeout_s: float = 60.0) -> None:
    """Block until the server at ``address`` reports SERVING."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{address} was not SERVING after {timeout_s} s")


async def time_raw(port: int, payload: bytes) -> float:
    """Seconds to stream the payload to the raw receiver."""
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        await channel.channel_ready()
        upload: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(RAW_METHOD)

        async def requests() -> AsyncIterator[bytes]:
            for chunk in chunks_of(payload):
                yield chunk

        start = time.perf_counter()
        answer = await upload(requests(), timeout=600)
        seconds = time.perf_counter() - start
    if int.from_bytes(answer, "little") != len(payload):
        raise RuntimeError("the raw receiver counted a different number of bytes")
    return seconds


async def time_submit(
    port: int,
    payload: bytes,
    manifest: Manifest,
    digest: str,
    base: common.ModelRef,
    node: str,
    signer: NodeSigner,
) -> float:
    """Seconds to upload the payload through SubmitUpdate until its receipt is recorded."""
    async with open_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        client = AggregatorClient(channel, attempts=1)
        start = time.perf_counter()
        response = await client.submit_update(
            run_id=RUN,
            round_no=1,
            node_id=node,
            manifest=manifest,
            digest=digest,
            num_samples=1,
            payload_bytes=len(payload),
            base_model=base,
            local_loss=0.0,
            chunks=lambda: chunks_of(payload),
            deadline_s=600,
            signer=signer,
        )
        seconds = time.perf_counter() - start
    if response.duplicate or response.received_bytes != len(payload):
        raise RuntimeError(f"unexpected answer from the aggregator: {response}")
    return seconds


def summary(
    size_mib: float, seconds: list[float], peaks: list[float], rss: list[float]
) -> dict[str, Any]:
    """Throughput and memory of one receiver over its runs."""
    return {
        "mib_per_s_best": round(size_mib / min(seconds), 1),
        "mib_per_s_median": round(size_mib / statistics.median(seconds), 1),
        "seconds": [round(s, 3) for s in seconds],
        "receiver_rss_before_mib": round(max(rss), 1),
        "receiver_peak_rss_mib": round(max(peaks), 1),
        "receiver_peak_growth_mib": round(max(p - r for p, r in zip(peaks, rss, strict=True)), 1),
    }


async def run(size_mib: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Start Redis, registry, aggregator and the raw receiver; time both paths; return the JSON."""
    elements = size_mib * MIB // 4
    manifest = Manifest.of([TensorSpec("w", "float32", (elements,))])
    header = encode_header(manifest)
    data = np.random.default_rng(0).standard_normal(elements, dtype=np.float32) * 0.01
    payload = header + data.tobytes()
    del data
    digest = hashlib.sha256(payload).hexdigest()
    zero_block = bytes(CHUNK_BYTES)

    def base_chunks() -> Iterator[bytes]:
        yield header
        for start in range(0, elements * 4, CHUNK_BYTES):
            yield zero_block[: min(CHUNK_BYTES, elements * 4 - start)]

    redis_server = EmbeddedRedis(workdir / "redis").start()
    log = (workdir / "services.log").open("w")
    env = dict(os.environ)
    env.update(
        {
            "FEDMESH_LISTEN": "127.0.0.1:0",
            "FEDMESH_REDIS_URL": redis_server.url,
            "FEDMESH_REGISTRY_DATA_DIR": str(workdir / "registry"),
            "FEDMESH_AGGREGATOR_SPOOL_DIR": str(workdir / "spool"),
            "FEDMESH_AGGREGATOR_MAX_UPDATE_BYTES": str(len(payload) + MIB),
            "FEDMESH_LOG_LEVEL": "WARNING",
        }
    )
    env.pop("FEDMESH_METRICS_PORT", None)
    receivers: list[Receiver] = []
    redis = connect(redis_server.url)
    try:
        registry = Receiver([sys.executable, "-m", "fedmesh.services.registry"], env, log)
        receivers.append(registry)
        env["FEDMESH_REGISTRY_ADDRESS"] = f"127.0.0.1:{registry.port}"
        aggregator = Receiver([sys.executable, "-m", "fedmesh.services.aggregator"], env, log)
        receivers.append(aggregator)
        raw = Receiver([sys.executable, __file__, "--serve-raw"], env, log)
        receivers.append(raw)
        await wait_serving(f"127.0.0.1:{aggregator.port}")

        async with open_channel(f"127.0.0.1:{registry.port}") as channel:
            version = await RegistryClient(channel).publish(
                "bench-model",
                base_chunks(),
                manifest=manifest,
                digest=digest_chunks(base_chunks()),
                size_bytes=len(header) + elements * 4,
            )
        nodes = [f"node-{i}" for i in range(repeats)]
        signers = {node: NodeSigner.generate() for node in nodes}
        base = {
            "name": version.ref.name,
            "version": version.ref.version,
            "digest": version.ref.digest,
        }
        rounds = RoundStore(redis)
        now_ms = time.time_ns() // 1_000_000
        keys = json.dumps({node: signer.public_key.hex() for node, signer in signers.items()})
        fields = {"base_model": json.dumps(base), SIGNING_KEYS_FIELD: keys}
        await rounds.create(RUN, 1, nodes, now_ms + 3_600_000, now_ms, fields)
        await rounds.transition(RUN, 1, Phase.PENDING, Phase.COLLECTING)

        measured: dict[str, tuple[list[float], list[float], list[float]]] = {
            "raw_grpc": ([], [], []),
            "submit_update": ([], [], []),
        }
        for node in nodes:
            for name, receiver in (("raw_grpc", raw), ("submit_update", aggregator)):
                seconds, peaks, rss = measured[name]
                rss.append(receiver.reset_peak())
                if name == "raw_grpc":
                    seconds.append(await time_raw(raw.port, payload))
                else:
                    seconds.append(
                        await time_submit(
                            aggregator.port,
                            payload,
                            manifest,
                            digest,
                            version.ref,
                            node,
                            signers[node],
                        )
                    )
                peaks.append(receiver.peak_mib())
    finally:
        for receiver in reversed(receivers):
            receiver.stop()
        await redis.aclose()
        redis_server.stop()
        log.close()

    size = len(payload) / MIB
    raw_summary = summary(size, *measured["raw_grpc"])
    submit_summary = summary(size, *measured["submit_update"])
    return {
        "bench": "transport",
        "update_mib": round(size, 3),
        "chunk_mib": CHUNK_BYTES / MIB,
        "repeats": repeats,
        "cpus": os.cpu_count(),
        "submit_update": submit_summary,
        "raw_grpc": raw_summary,
        "ratio_best": round(submit_summary["mib_per_s_best"] / raw_summary["mib_per_s_best"], 3),
        "ratio_median": round(
            submit_summary["mib_per_s_median"] / raw_summary["mib_per_s_median"], 3
        ),
        "goal_ratio": GOAL_RATIO,
        "goal_receiver_peak_growth_mib": round(size + GOAL_HEADROOM_MIB, 1),
    }


def main() -> None:
    """Parse arguments, run the benchmark (or the raw receiver) and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="update size in MiB")
    parser.add_argument("--repeats", type=int, default=3, help="uploads per receiver")
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        asyncio.run(serve_raw())
        return
    with tempfile.TemporaryDirectory(prefix="fedmesh-bench-transport-") as tmp:
        result = asyncio.run(run(args.size_mib, args.repeats, Path(tmp)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
