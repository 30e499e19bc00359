"""What user code sees of the outside world: a ``worker`` object and a ``taskworker`` module.

Every method sends one request frame up the pipe and blocks for the host's answer; the
host's HostServices policy decides. Stdlib only.
"""

from __future__ import annotations

import base64
import types
from collections.abc import Callable
from typing import Any

from . import framing
from .guard import SandboxPolicyError

_REGISTRY: dict[str, Callable[..., Any]] = {}


class HostRequestError(RuntimeError):
    """The host refused or failed a request (PermissionError is used for refusals)."""


class _Pipe:
    def __init__(self) -> None:
        self.fd = -1
        self.next_id = 0

    def request(self, method: str, params: dict[str, Any]) -> Any:
        if self.fd < 0:
            raise SandboxPolicyError("host requests are only available during a call")
        self.next_id += 1
        framing.write_frame(self.fd, {"op": "req", "id": self.next_id, "method": method,
                                      "params": params})
        reply = framing.read_frame(self.fd)
        if not isinstance(reply, dict) or reply.get("id") != self.next_id:
            raise HostRequestError("malformed reply from host")
        if reply.get("ok"):
            return reply.get("value")
        message = str(reply.get("error", "request failed"))
        if reply.get("denied"):
            raise PermissionError(message)
        if reply.get("invalid"):
            raise ValueError(message)
        raise HostRequestError(message)


PIPE = _Pipe()


class _NoStorage:
    def __getattr__(self, name: str) -> Any:
        raise SandboxPolicyError("worker.storage is not available inside the sandbox")


class TaskWorker:
    """Sandbox stand-in for taskworker.TaskWorker: registration plus host requests."""

    def __init__(self, worker_id: str = "sandbox", node_pool_address: str | None = None) -> None:
        self.worker_id = worker_id
        self.node_pool_address = node_pool_address
        self.storage = _NoStorage()

    def register_function(self, name: str, func: Callable[..., Any]) -> None:
        _REGISTRY[name] = func

    def function(self, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
        if callable(name):  # bare @worker.function
            func: Callable[..., Any] = name
            _REGISTRY[func.__name__] = func
            return func

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            _REGISTRY[name or func.__name__] = func
            return func

        return decorate

    def get_secret(self, name: str, owner: str | None = None) -> str:
        """``owner`` (a node id, a prefix of one of 16+ hex digits, or a public key): take
        only the record that key signed, never another's (the host checks the form)."""
        params = {"name": str(name)}
        if owner is not None:
            params["owner"] = str(owner)
        return str(PIPE.request("get_secret", params))

    def call_external_api(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        timeout: float = 10.0,
    ) -> Any:
        wire_body: Any = body
        if isinstance(body, bytes | bytearray):
            wire_body = {"b64": base64.b64encode(bytes(body)).decode()}
        return PIPE.request("call_external_api", {
            "url": str(url), "method": str(method), "headers": headers, "body": wire_body,
            "timeout": float(timeout),
        })

    def resolve(self, domain: str, record_type: str = "A") -> Any:
        return PIPE.request("resolve", {"domain": str(domain), "record_type": str(record_type)})

    async def start_server(self, port: int = 50052) -> None:
        raise SandboxPolicyError("servers cannot be started inside the sandbox")

    async def stop_server(self) -> None:
        return None


def registered() -> dict[str, Callable[..., Any]]:
    return _REGISTRY


def make_modules() -> tuple[TaskWorker, types.ModuleType]:
    """The injected ``worker`` global and the ``taskworker`` module shim."""
    worker = TaskWorker("sandbox")
    module = types.ModuleType("taskworker", "TaskWorker inside the sandbox")
    module.TaskWorker = TaskWorker  # type: ignore[attr-defined]
    module.worker = worker  # type: ignore[attr-defined]
    module.get_secret = worker.get_secret  # type: ignore[attr-defined]
    module.call_external_api = worker.call_external_api  # type: ignore[attr-defined]
    module.resolve = worker.resolve  # type: ignore[attr-defined]
    return worker, module
