"""Registry transfers: upload and download of a model vs raw grpcio bytes streaming (the ceiling).

Run: .venv/bin/python bench/registry.py [--size-mib 512] [--repeats 1]

Every end is its own process on loopback: the real registry
(``python -m fedmesh.services.registry`` over an embedded Redis), a bare grpcio
server that counts an uploaded stream and streams bytes back (``--serve-raw``),
and one fresh client process per transfer (``--client MODE``). The model is a
canonical safetensors file of random finite float32, written to disk once with its
digest (as a publisher knows it). Registry upload: ``RegistryClient.publish``
streams the file from disk, and the time runs until the version is signed and
recorded (hashing, header and finiteness checks, blob write and fsync included).
Registry download: ``RegistryClient.download_to`` into a file, digest-checked on
both ends and fsynced. The raw client streams the same file up and discards what
comes down: the transport's ceiling. Peak RSS of each end is VmHWM from /proc,
reset (``clear_refs`` 5) just before the transfer and reported as growth over the
RSS at that moment; CPU seconds per GiB of each end (all threads, from /proc) show the
cost where a shared machine makes wall-clock throughput noisy. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np

from fedmesh.client.registry import RegistryClient
from fedmesh.rpc import CHUNK_BYTES, MAX_MESSAGE_BYTES, open_channel
from fedmesh.store import EmbeddedRedis
from fedmesh.tensors import Manifest, TensorSpec, encode_header, header_length, parse_header

MIB = 1 << 20
RAW_SERVICE = "fedmesh.bench.RawBytes"
TENSOR_MIB = 64
MODEL = "bench-model"
GOAL_RATIO = 0.8
GOAL_GROWTH_MIB = 64
MODES = ("raw-upload", "registry-upload", "raw-download", "registry-download")
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int | str) -> float:
    """User plus system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int | str) -> float:
    """Reset the process's peak RSS to its current RSS; return that RSS in MiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kib(pid, "VmRSS") / 1024


def write_model(path: Path, size_mib: int) -> tuple[str, int]:
    """A canonical payload of ``size_mib`` MiB of float32 in 64 MiB tensors; (digest, bytes)."""
    tensors = max(1, size_mib // TENSOR_MIB)
    elements = size_mib * MIB // 4 // tensors
    manifest = Manifest.of(
        TensorSpec(f"layer{i:03d}.weight", "float32", (elements,)) for i in range(tensors)
    )
    rng = np.random.default_rng(0)
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        header = encode_header(manifest)
        out.write(header)
        hasher.update(header)
        for _ in range(tensors):
            left = elements
            while left:
                block = rng.standard_normal(min(left, MIB // 4), dtype=np.float32).tobytes()
                out.write(block)
                hasher.update(block)
                left -= len(block) // 4
        size = out.tell()
    return hasher.hexdigest(), size


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file in CHUNK_BYTES pieces, read off the event loop."""
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, CHUNK_BYTES):
            yield chunk


async def serve_raw() -> None:
    """The ceiling: count an uploaded stream; stream back as many bytes as asked for."""
    block = bytes(CHUNK_BYTES)

    async def upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
        total = 0
        async for chunk in requests:
            total += len(chunk)
        return total.to_bytes(8, "little")

    async def download(request: bytes, context: Any) -> AsyncIterator[bytes]:
        left = int.from_bytes(request, "little")
        while left:
            take = min(left, CHUNK_BYTES)
            yield block if take == CHUNK_BYTES else block[:take]
            left -= take

    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                RAW_SERVICE,
                {
                    "Upload": grpc.stream_unary_rpc_method_handler(upload),
                    "Download": grpc.unary_stream_rpc_method_handler(download),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    await server.wait_for_termination()


async def raw_transfer(mode: str, address: str, model: Path, size: int) -> None:
    """One raw upload or download; raises unless every byte went through."""
    async with grpc.aio.insecure_channel(address, options=_OPTIONS) as channel:
        await channel.channel_ready()
        if mode == "raw-upload":
            upload: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
                f"/{RAW_SERVICE}/Upload"
            )
            counted = int.from_bytes(await upload(file_chunks(model), timeout=3600), "little")
        else:
            download: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                f"/{RAW_SERVICE}/Download"
            )
            counted = 0
            async for chunk in download(size.to_bytes(8, "little"), timeout=3600):
                counted += len(chunk)
    if counted != size:
        raise RuntimeError(f"{mode} moved {counted} bytes, not {size}")


async def registry_transfer(mode: str, address: str, model: Path, digest: str, size: int) -> None:
    """One registry publish or download_to; raises unless the digest comes back."""
    with model.open("rb") as source:
        prefix = source.read(8)
        manifest = parse_header(prefix + source.read(header_length(prefix))).manifest
    async with open_channel(address, default_timeout=3600) as channel:
        client = RegistryClient(channel, transfer_timeout=3600)
        await client.status()
        if mode == "registry-upload":
            version = await client.publish(
                MODEL, file_chunks(model), manifest=manifest, digest=digest, size_bytes=size
            )
            got = version.ref.digest
        else:
            target = model.with_name("downloaded.safetensors")
            got = (await client.download_to(target, MODEL)).version.ref.digest
            target.unlink()
    if got != digest:
        raise RuntimeError(f"{mode} ended with digest {got}, not {digest}")


async def client(mode: str, address: str, model: Path, digest: str, size: int) -> dict[str, float]:
    """Run one transfer in this process; its seconds and this process's memory."""
    before = reset_peak("self")
    cpu = cpu_seconds("self")
    start = time.perf_counter()
    if mode.startswith("raw"):
        await raw_transfer(mode, address, model, size)
    else:
        await registry_transfer(mode, address, model, digest, size)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_s": cpu_seconds("self") - cpu,
        "rss_before_mib": before,
        "rss_peak_mib": status_kib("self", "VmHWM") / 1024,
    }


class Server:
    """A child process that prints ``LISTENING <port>``."""

    def __init__(self, args: list[str], env: dict[str, str], log: TextIO) -> None:
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("LISTENING "):
                self.address = f"127.0.0.1:{int(line.split()[1])}"
                return
        raise RuntimeError(f"{args} exited with {self.process.wait()} before listening")

    def stop(self) -> None:
        """Terminate and wait."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def transfer(server: Server, mode: str, model: Path, digest: str, size: int) -> dict[str, float]:
    """Run a client process for ``mode`` against ``server``; both ends' figures."""
    server_before = reset_peak(server.process.pid)
    server_cpu = cpu_seconds(server.process.pid)
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            mode,
            "--address",
            server.address,
            "--model",
            str(model),
            "--digest",
            digest,
            "--size-bytes",
            str(size),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} client failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["server_cpu_s"] = cpu_seconds(server.process.pid) - server_cpu
    figures["server_rss_before_mib"] = server_before
    figures["server_rss_peak_mib"] = status_kib(server.process.pid, "VmHWM") / 1024
    return figures


def summary(size_mib: float, runs: list[dict[str, float]]) -> dict[str, float]:
    """Best throughput and worst memory growth of one mode over its repeats."""
    best = min(r["seconds"] for r in runs)
    gib = size_mib / 1024
    return {
        "mib_per_s": round(size_mib / best, 1),
        "seconds": round(best, 3),
        "client_cpu_s_per_gib": round(min(r["cpu_s"] for r in runs) / gib, 2),
        "server_cpu_s_per_gib": round(min(r["server_cpu_s"] for r in runs) / gib, 2),
        "client_rss_growth_mib": round(
            max(r["rss_peak_mib"] - r["rss_before_mib"] for r in runs), 1
        ),
        "server_rss_growth_mib": round(
            max(r["server_rss_peak_mib"] - r["server_rss_before_mib"] for r in runs), 1
        ),
        "client_rss_peak_mib": round(max(r["rss_peak_mib"] for r in runs), 1),
        "server_rss_peak_mib": round(max(r["server_rss_peak_mib"] for r in runs), 1),
    }


def run(size_mib: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Start Redis, the registry and the raw server; time every mode; return the JSON."""
    model = workdir / "model.safetensors"
    digest, size = write_model(model, size_mib)
    redis = EmbeddedRedis(workdir / "redis").start()
    env = {
        **os.environ,
        "FEDMESH_LISTEN": "127.0.0.1:0",
        "FEDMESH_REDIS_URL": redis.url,
        "FEDMESH_REGISTRY_DATA_DIR": str(workdir / "registry"),
        "FEDMESH_REGISTRY_KEEP_VERSIONS": "1",
    }
    servers: list[Server] = []
    with (workdir / "servers.log").open("w") as log:
        try:
            registry = Server([sys.executable, "-m", "fedmesh.services.registry"], env, log)
            servers.append(registry)
            raw = Server([sys.executable, __file__, "--serve-raw"], env, log)
            servers.append(raw)
            results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            for _ in range(repeats):
                for mode in MODES:
                    server = raw if mode.startswith("raw") else registry
                    results[mode].append(transfer(server, mode, model, digest, size))
        finally:
            for server in servers:
                server.stop()
            redis.stop()
    size_in_mib = size / MIB
    modes = {mode: summary(size_in_mib, results[mode]) for mode in MODES}
    ratios = {
        direction: round(
            modes[f"registry-{direction}"]["mib_per_s"] / modes[f"raw-{direction}"]["mib_per_s"], 3
        )
        for direction in ("upload", "download")
    }
    registry_growth = max(
        modes[m][end]
        for m in ("registry-upload", "registry-download")
        for end in ("client_rss_growth_mib", "server_rss_growth_mib")
    )
    return {
        "bench": "registry",
        "size_mib": round(size_in_mib, 1),
        "chunk_kib": CHUNK_BYTES // 1024,
        "repeats": repeats,
        "cpus": os.cpu_count(),
        "upload": {
            "registry_mib_s": modes["registry-upload"]["mib_per_s"],
            "raw_grpc_mib_s": modes["raw-upload"]["mib_per_s"],
            "ratio": ratios["upload"],
        },
        "download": {
            "registry_mib_s": modes["registry-download"]["mib_per_s"],
            "raw_grpc_mib_s": modes["raw-download"]["mib_per_s"],
            "ratio": ratios["download"],
        },
        "modes": modes,
        "goals": {
            "ratio": GOAL_RATIO,
            "rss_growth_mib": GOAL_GROWTH_MIB,
            "ratio_met": min(ratios.values()) >= GOAL_RATIO,
            "rss_growth_met": registry_growth <= GOAL_GROWTH_MIB,
        },
    }


def main() -> None:
    """Parse the arguments and play the role they name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--digest", help=argparse.SUPPRESS)
    parser.add_argument("--size-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        asyncio.run(serve_raw())
    elif args.client:
        figures = asyncio.run(
            client(args.client, args.address, args.model, args.digest, args.size_bytes)
        )
        print(json.dumps(figures))
    else:
        with tempfile.TemporaryDirectory(prefix="fedmesh-bench-registry-") as workdir:
            print(json.dumps(run(args.size_mib, args.repeats, Path(workdir))))


if __name__ == "__main__":
    main()
