"""grpcio's own cost per call: the Python server with thread pools of several sizes, and grpc.aio.

An empty ``ServerLive`` answered by each server (no assay code in the handler), h2load sending unary
calls on 8 connections, one in flight on each, the servers measured in turns. What counts is the
server's CPU per call (its user + system time from /proc around each run, divided by the calls
answered): on a machine shared with other work, rates swing with the neighbours while CPU per call
moves much less. This is the floor under every gRPC call assay answers.

    python bench/bench_grpc_overhead.py [--kinds sync2,sync4,sync8,aio] [--rounds 5] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from assay.web.oip_proto import grpc_service_pb2 as pb
from assay.web.oip_proto import grpc_service_pb2_grpc as pb_grpc

OUT = Path(__file__).resolve().parent / "out" / "grpc-overhead"
METHOD = "/inference.GRPCInferenceService/ServerLive"


class Sync(pb_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)


class Aio(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return pb.ServerLiveResponse(live=True)


def serve(kind: str, port: int) -> None:
    """Run one server until killed: ``syncN`` (a thread pool of N) or ``aio``."""
    if kind.startswith("sync"):
        server = grpc.server(ThreadPoolExecutor(max_workers=int(kind.removeprefix("sync"))))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Sync(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def run() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Aio(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="sync2,sync4,sync8,aio")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    message = pb.ServerLiveRequest().SerializeToString()
    body = OUT / "live.bin"
    body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    servers = {}
    for i, kind in enumerate(args.kinds.split(",")):
        port = 19300 + i
        process = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
        servers[kind] = (process, port)
    time.sleep(8)  # every server listening
    per_call: dict[str, list[float]] = {kind: [] for kind in servers}
    try:
        for _ in range(args.rounds):
            for kind, (process, port) in servers.items():
                before = cpu_s(process.pid)
                command = ["h2load", "-t1", "-c8", "-m1", f"-D{args.duration}", "-d", str(body)]
                command += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
                out = subprocess.run(
                    [*command, f"http://127.0.0.1:{port}{METHOD}"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out)[1])  # type: ignore[index]
                per_call[kind].append((cpu_s(process.pid) - before) / max(done, 1) * 1e6)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
    print(
        f"{os.cpu_count()} CPUs; h2load -t1 -c8 -m1, {args.duration}s a run, {args.rounds} rounds in turns\n"
    )
    print("| server | CPU µs per empty call (median) | rounds |\n|---|---|---|")
    for kind, values in per_call.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {kind} | {statistics.median(values):.0f} | {rounds} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
