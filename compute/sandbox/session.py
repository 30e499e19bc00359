"""One call's conversation with one worker, host side: send the call, serve the worker's
requests through the HostServices policy hook, read the result. Everything the worker sends
is untrusted: strict JSON in size-capped frames, validated before use."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from . import errors, framing
from .limits import JSON, HostServices, Limits, check_owner

_ERROR_SLACK = 64 * 1024


@dataclass
class Worker:
    wid: int
    sock: socket.socket
    pidfd: int
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop()
                                        .create_future())

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    def close(self) -> None:
        self.kill()
        self.sock.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


async def _read_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = await loop.sock_recv_into(sock, view[got:])
        if k == 0:
            raise framing.ConnectionClosed
        got += k
    return bytes(buf)


async def read_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket, cap: int) -> Any:
    (size,) = framing.HEADER.unpack(await _read_exact(loop, sock, framing.HEADER.size))
    if size > cap:
        raise framing.FrameTooLarge(size, cap)
    return framing.loads(await _read_exact(loop, sock, size))


def _redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[REDACTED]")
    return text


def _user_failure(msg: dict[str, Any], secrets: set[str]) -> errors.SandboxError:
    """The worker's error report as an exception; secrets handed out in this call are
    redacted from the message and the traceback (not from a result the user returns)."""
    kind = msg.get("kind")
    text = _redact(str(msg.get("message", ""))[:8192], secrets)
    if kind == "user":
        return errors.UserCodeError(_redact(str(msg.get("type", "Exception"))[:200], secrets),
                                    text, _redact(str(msg.get("traceback", ""))[:65536], secrets))
    table: dict[Any, type[errors.SandboxError]] = {
        "policy": errors.PolicyViolation, "time": errors.TimeLimit,
        "memory": errors.MemoryLimit, "output": errors.OutputLimit,
        "args": errors.BadArguments, "entry": errors.EntryNotFound,
    }
    return table.get(kind, errors.SandboxError)(text or "sandbox failure")


async def _serve_request(host: HostServices, msg: dict[str, Any]) -> dict[str, Any]:
    method, params = msg.get("method"), msg.get("params")
    reply: dict[str, Any] = {"op": "resp", "id": msg.get("id")}
    try:
        if not isinstance(params, dict):
            raise ValueError("malformed request")
        value: JSON
        if method == "get_secret":
            owner = check_owner(params.get("owner"))
            value = await (host.get_secret(str(params["name"])) if owner is None else
                           host.get_secret(str(params["name"]), owner=owner))
        elif method == "resolve":
            value = await host.resolve(str(params["domain"]), str(params["record_type"]))
        elif method == "call_external_api":
            body = params.get("body")
            if isinstance(body, dict) and isinstance(body.get("b64"), str):
                body = base64.b64decode(body["b64"])
            elif body is not None and not isinstance(body, str):
                raise ValueError("body must be str or bytes")
            headers = params.get("headers")
            if headers is not None and not (isinstance(headers, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
                raise ValueError("headers must map str to str")
            value = await host.call_external_api(str(params["url"]), str(params["method"]),
                                                 headers, body, float(params["timeout"]))
        else:
            raise ValueError(f"unknown request {method!r}")
        framing.dumps(value)
        reply.update(ok=True, value=value)
    except PermissionError as exc:
        reply.update(ok=False, denied=True, error=str(exc)[:1000] or "permission denied")
    except ValueError as exc:   # a bad argument: the user's ValueError
        reply.update(ok=False, invalid=True, error=str(exc)[:1000] or "invalid argument")
    except Exception as exc:  # the policy hook's failure becomes the user's RuntimeError
        reply.update(ok=False, error=str(exc)[:1000] or type(exc).__name__)
    return reply


async def _classify_exit(worker: Worker) -> errors.SandboxError:
    try:
        status = await asyncio.wait_for(asyncio.shield(worker.exited), 2.0)
    except TimeoutError:
        return errors.SandboxError("worker vanished without a result")
    if status == -1:
        return errors.SandboxError("the sandbox zygote died during the call")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return errors.TimeLimit("CPU time limit exceeded")
        if sig == signal.SIGSYS:
            return errors.PolicyViolation("forbidden system call")
        return errors.SandboxError(f"worker crashed ({signal.Signals(sig).name})")
    return errors.SandboxError("worker exited without a result")


async def converse(worker: Worker, call: bytes, limits: Limits, host: HostServices,
                   info: dict[str, Any] | None = None) -> JSON:
    """Run one call on ``worker`` (which the caller kills and closes afterwards); ``info``
    receives ``cached`` (the worker found the module compiled by the zygote)."""
    loop = asyncio.get_running_loop()
    cap = max(limits.output_bytes, _ERROR_SLACK) + 1024
    requests = 0
    secrets: set[str] = set()
    try:
        async with asyncio.timeout(limits.wall_time_s):
            await loop.sock_sendall(worker.sock, call)
            while True:
                msg = await read_frame(loop, worker.sock, cap)
                if not isinstance(msg, dict):
                    raise errors.SandboxError("malformed message from worker")
                op = msg.get("op")
                if op == "result":
                    if info is not None:
                        info["cached"] = msg.get("cached") is True
                    return msg.get("value")
                if op == "error":
                    raise _user_failure(msg, secrets)
                if op != "req":
                    raise errors.SandboxError("malformed message from worker")
                requests += 1
                if requests > limits.max_host_requests:
                    raise errors.PolicyViolation("too many host requests in one call")
                reply = await _serve_request(host, msg)
                if msg.get("method") == "get_secret" and reply.get("ok"):
                    if len(str(reply["value"])) >= 4:  # shorter would redact noise
                        secrets.add(str(reply["value"]))
                await loop.sock_sendall(worker.sock, framing.encode(reply))
    except TimeoutError:
        raise errors.TimeLimit(f"wall-clock limit of {limits.wall_time_s:g}s exceeded") from None
    except framing.FrameTooLarge as exc:
        raise errors.OutputLimit(f"output exceeds the cap of {limits.output_bytes} bytes") \
            from exc
    except (framing.ConnectionClosed, ConnectionError):
        raise await _classify_exit(worker) from None
    except framing.FrameError as exc:
        raise errors.SandboxError(f"malformed frame from worker: {exc}") from None


def encode_call(source: str, entry: str, args: list[JSON], kwargs: dict[str, JSON],
                limits: Limits, filename: str, code_key: str) -> bytes:
    """Validate and encode a call (BadArguments for anything that is not JSON)."""
    if not isinstance(source, str) or len(source.encode()) > limits.source_bytes:
        raise errors.BadArguments("source must be a string within the source size limit")
    if not isinstance(entry, str) or not entry.isidentifier():
        raise errors.BadArguments("entry must be a function name")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise errors.BadArguments("args must be a list and kwargs a dict of names")
    try:
        return framing.encode({"op": "call", "source": source, "entry": entry, "args": args,
                               "kwargs": kwargs, "limits": limits.to_wire(),
                               "filename": str(filename), "code_key": code_key})
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.BadArguments(f"arguments are not JSON: {exc}") from None
