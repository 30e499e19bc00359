"""The public TaskWorker façade (the seed's API), backed by an embedded node.

    from taskworker import TaskWorker
    worker = TaskWorker("worker_001")              # node_pool_address="host:port" to join
    @worker.function("hello")
    def hello_world():
        return "Hello from HiveMind!"
    await worker.start_server(port=50052)          # serves until stop_server() or SIGINT/TERM

Registered functions never run in this process: at registration their module's source is
captured (``inspect.getsource``) and every call runs it in the node's sandbox pool, with the
function's name as the entry. Module-level imports the sandbox does not allow (``asyncio``,
``proto``, ...) are replaced, line for line, by a stand-in that raises ImportError only if a
function actually uses them, and the ``if __name__ == "__main__":`` block is dropped, so a
module written like the seed's examples loads unchanged in the sandbox.

Deployment overrides (so an unchanged example can be started anywhere): ``TASKWORKER_PORT``
(the local API port; 0 picks one), ``TASKWORKER_NODE_POOL`` (bootstrap peer when the code
passes none), ``TASKWORKER_DATA_DIR`` (parent of the per-worker node directory,
default ``./.taskworker``), ``TASKWORKER_LISTEN`` (peer address, default 127.0.0.1:0).

Outside the sandbox ``get_secret`` and ``call_external_api`` are coroutines served by the
node's proxy service; inside a sandboxed function the same names are plain calls (the
sandbox's shim sends them up its pipe to the same proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import grpc

from compute.sandbox.limits import check_owner
from mesh.channel import allocator
from proto import taskworker_pb2_grpc
from taskworker.worker_capture import TaskWorkerError, capture
from taskworker.worker_storage import FileStorage

__all__ = ["FileStorage", "TaskWorker", "TaskWorkerError", "capture"]

F = TypeVar("F", bound=Callable[..., Any])


class TaskWorker:
    def __init__(self, worker_id: str, node_pool_address: str | None = None, *,
                 data_dir: str | os.PathLike[str] | None = None) -> None:
        if not worker_id or not worker_id.isprintable() or "/" in worker_id or \
                worker_id in (".", ".."):
            raise TaskWorkerError(f"worker id {worker_id!r} must be printable, without '/'")
        self.worker_id = worker_id
        self.node_pool_address = node_pool_address or os.environ.get("TASKWORKER_NODE_POOL")
        base = data_dir or os.environ.get("TASKWORKER_DATA_DIR") or ".taskworker"
        self.data_dir = Path(base) / worker_id
        self.functions: dict[str, tuple[Callable[..., Any], str, str, str, Any]] = {}
        self.storage = FileStorage(self)
        self.node: Any = None
        self._file_stub: taskworker_pb2_grpc.FileServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # registration ---------------------------------------------------------------------
    def register_function(self, name: str, func: Callable[..., Any], *,
                          limits: Any = None) -> None:
        """Offer ``func`` as ``name``. ``limits``: a compute.sandbox.Limits for its calls."""
        if not isinstance(name, str) or not name:
            raise TaskWorkerError("function name must be a non-empty string")
        source, entry, filename = capture(func)
        self.functions[name] = (func, source, entry, filename, limits)
        if self.node is not None:
            task = asyncio.get_running_loop().create_task(self._publish(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @overload
    def function(self, name: F) -> F: ...

    @overload
    def function(self, name: str | None = None) -> Callable[[F], F]: ...

    def function(self, name: str | Callable[..., Any] | None = None) -> Any:
        """Decorator: ``@worker.function("name")``, ``@worker.function()`` or bare."""
        if callable(name):
            self.register_function(name.__name__, name)
            return name

        def decorate(func: F) -> F:
            self.register_function(name or func.__name__, func)
            return func

        return decorate

    async def _publish(self, name: str) -> None:
        compute = self._compute()
        func, source, entry, filename, limits = self.functions[name]
        await compute.register_local(name, source, entry, worker_id=self.worker_id,
                                     filename=filename, limits=limits)

    def _compute(self) -> Any:
        if self.node is None or self.node.ctx is None:
            raise TaskWorkerError("the worker is not running: await start_server() first")
        compute = self.node.ctx.registry.get("compute")
        if compute is None:
            raise TaskWorkerError("this node has no compute service")
        return compute

    # server ---------------------------------------------------------------------------
    async def start_server(self, port: int = 50052, *, wait: bool = True) -> None:
        """Start the embedded node (joining ``node_pool_address`` if given, else a new mesh),
        publish the functions, and — unless ``wait=False`` — serve until stop_server(),
        SIGINT/SIGTERM or a Leave request."""
        from taskworker.api_auth import aio_channel
        from taskworker.cli_common import parse_hostport
        from taskworker.node import Node, NodeConfig, StartupError

        if self.node is not None:
            raise TaskWorkerError("the server is already running")
        try:
            port = int(os.environ.get("TASKWORKER_PORT", port))
            listen = parse_hostport(os.environ.get("TASKWORKER_LISTEN", "127.0.0.1:0"))
            bootstrap = [parse_hostport(self.node_pool_address)] if self.node_pool_address \
                else []
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise TaskWorkerError(f"bad address or port: {exc}") from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        node = Node(NodeConfig(data_dir=self.data_dir, listen=listen, api=("127.0.0.1", port),
                               bootstrap=bootstrap))
        self._stop = asyncio.Event()
        try:
            await node.start()
        except StartupError as exc:
            await node.stop(0)
            hint = (" (for a TaskWorker: pass another port, or set TASKWORKER_PORT; 0 picks a "
                    "free one)") if "local API" in str(exc) else ""
            raise TaskWorkerError(f"{exc}{hint}") from None
        except BaseException:
            await node.stop(0)
            raise
        self.node = node
        allocator.tune()  # as the node itself: bulk messages reuse pages (mesh/channel/allocator.py)
        self._channel = aio_channel(f"127.0.0.1:{node.api_port}", node.api_token)
        self._file_stub = taskworker_pb2_grpc.FileServiceStub(self._channel)
        for name in list(self.functions):
            await self._publish(name)
        print(f"taskworker {self.worker_id}: serving {', '.join(self.functions) or 'nothing'} "
              f"on node {node.identity.node_id_hex[:16]} (api 127.0.0.1:{node.api_port}, "
              f"peer {node.config.listen[0]}:{node.port}); API token in "
              f"{node.api_runtime_file or node.api_token_file}", file=sys.stderr, flush=True)
        if wait:
            await self.serve_forever()

    async def serve_forever(self) -> None:
        """Serve until stop_server(), SIGINT/SIGTERM or a Leave request; then stop."""
        if self.node is None or self._stop is None:
            raise TaskWorkerError("start_server() first")
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop.set)
                installed.append(sig)
        leave = loop.create_task(self.node.shutdown.wait())
        stop = loop.create_task(self._stop.wait())
        try:
            await asyncio.wait({leave, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
            stop.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop_server()

    async def stop_server(self) -> None:
        """Withdraw the functions and stop the embedded node."""
        node, self.node = self.node, None
        if self._stop is not None:
            self._stop.set()
        if node is None:
            return
        for task in list(self._tasks):
            task.cancel()
        if self._channel is not None:
            await self._channel.close(None)
            self._channel, self._file_stub = None, None
        await node.stop()

    # host services (outside the sandbox) ---------------------------------------------------
    def _host(self) -> Any:
        return self._compute().host_for(self.worker_id, "")

    async def get_secret(self, name: str, owner: str | None = None) -> str:
        """A secret from the node pool's proxy (PermissionError when refused). ``owner``
        (a node id, a prefix of one of 16+ hex digits, or a public key; ValueError for
        anything else) takes only the record that key signed: a secret another node set for
        this worker cannot then be stood in for by another key's record."""
        owner = check_owner(owner)
        host = self._host()
        secret: str = await (host.get_secret(name) if owner is None else
                             host.get_secret(name, owner=owner))
        return secret

    async def call_external_api(self, url: str, method: str = "GET",
                                headers: dict[str, str] | None = None,
                                body: str | bytes | None = None,
                                timeout: float = 10.0) -> Any:
        """An outbound HTTP request through the node pool's proxy."""
        return await self._host().call_external_api(url, method, headers, body, timeout)

    async def resolve(self, domain: str, record_type: str = "A") -> Any:
        return await self._host().resolve(domain, record_type)
