"""The processes the compute benchmark calls: a plain grpc.aio servicer (the floor any Python RPC
pays) and ``tw-mesh join`` nodes, whose local API is reached with the node's token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from taskworker.api_auth import aio_channel
from taskworker.api_token import TOKEN_FILE

ROOT = Path(__file__).resolve().parents[1]

SERVER = '''
import asyncio, sys
import grpc
from proto import taskworker_pb2, taskworker_pb2_grpc

class Servicer(taskworker_pb2_grpc.RPCServiceServicer):
    async def CallFunction(self, request, context):
        a, b = request.args.values
        resp = taskworker_pb2.FunctionCallResponse(worker_id="direct")
        resp.result.number_value = a.number_value + b.number_value
        return resp

async def main():
    server = grpc.aio.server()
    taskworker_pb2_grpc.add_RPCServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
'''


TOKENS: dict[str, str] = {}   # a node's API address -> its API token (DATA_DIR/api.token)


def api_channel(addr: str) -> grpc.aio.Channel:
    """A node's local API sends its token (as the CLI and TaskWorker do); the plain server not."""
    return aio_channel(addr, TOKENS[addr]) if addr in TOKENS else grpc.aio.insecure_channel(addr)


def start_node(tmp: Path, name: str, boot: str | None, roles: list[str]) -> tuple[Any, str, str]:
    log = tmp / f"{name}.log"
    args = [sys.executable, "-m", "taskworker.cli", "join", "--listen", "127.0.0.1:0",
            "--api", "127.0.0.1:0", "--data-dir", str(tmp / name), "--log-level", "INFO",
            *[f"--role={r}" for r in roles], *([f"--bootstrap={boot}"] if boot else [])]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        peer = re.search(r"peer address ([\d.]+:\d+)", text)
        api = re.search(r"local API on ([\d.]+:\d+)", text)
        if peer and api:
            TOKENS[api.group(1)] = (tmp / name / TOKEN_FILE).read_text().strip()
            return proc, peer.group(1), api.group(1)
        if proc.poll() is not None:
            raise RuntimeError(text[-2000:])
        time.sleep(0.05)
    raise TimeoutError(log.read_text()[-2000:])

