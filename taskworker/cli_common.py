"""Shared CLI plumbing: addresses, the local-API channel, output, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from mesh.channel import allocator

DEFAULT_API = "127.0.0.1:50052"
API_ENV = "TW_MESH_API"
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def parse_hostport(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, or ``[v6]:PORT``) → (host, port); argparse-friendly."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or default_host
    try:
        return host, parse_port(port_text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None


def parse_port(text: str) -> int:
    """A TCP/UDP port number 0-65535 (0: any free one); argparse-friendly."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("port must be a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("port out of range (0-65535)")
    return port


def add_api_flag(parser: argparse.ArgumentParser) -> None:
    from taskworker.api_token import TOKEN_ENV, TOKEN_FILE

    parser.add_argument("--api", metavar="HOST:PORT", type=parse_hostport,
                        default=parse_hostport(os.environ.get(API_ENV, DEFAULT_API)),
                        help=f"local API of the node to talk to (default: ${API_ENV} or {DEFAULT_API})")
    parser.add_argument("--api-token-file", metavar="FILE", type=Path,
                        help="file holding the node's API token (its copy is DATA_DIR/"
                        f"{TOKEN_FILE}), or your own user token (`tw-mesh user token`: "
                        f"acts as you only). Without it: ${TOKEN_ENV}, else the token the node "
                        "at --api leaves for this user in $XDG_RUNTIME_DIR/tw-mesh/"
                        "api-PORT.token (~/.tw-mesh/run/ without XDG_RUNTIME_DIR)")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def api_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to the node at ``--api`` that sends its API token on every call.

    The token comes from ``--api-token-file``, else ``$TW_MESH_API_TOKEN``, else the runtime
    file the node at that port left for this user, if that node still runs
    (taskworker/api_runtime.py; a stale one is a one-line error). With none found
    the call goes out without one, so a node that is down still reads as down; a node that
    answers UNAUTHENTICATED gets a message naming where the token was looked for.
    """
    from taskworker.api_auth import sync_channel
    from taskworker.api_runtime import find_token
    from taskworker.api_token import TokenError

    allocator.tune()  # a 1 MiB message costs ~1.7 ms of CPU with glibc's defaults, ~0.6 tuned
    host, port = args.api
    try:
        token, source = find_token(port, getattr(args, "api_token_file", None))
    except TokenError as exc:
        raise CliError(str(exc)) from None
    args.api_token_source = source if token else None
    args.api_token_searched = source
    return sync_channel(f"{host}:{port}", token, options=[
        ("grpc.max_receive_message_length", 64 * 2**20),
        ("grpc.max_send_message_length", 64 * 2**20)])


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


# What grpc says when the call never reached a node (or lost it); any other UNAVAILABLE is the
# node's own answer (e.g. "no DHT node stored the claim") and is shown as it is.
_TRANSPORT_FAILURES = ("failed to connect", "connection refused", "socket closed",
                       "connection reset", "dns resolution failed", "broken pipe")


def _unreachable(details: str) -> bool:
    lowered = details.lower()
    return any(marker in lowered for marker in _TRANSPORT_FAILURES)


def describe_rpc_error(exc: grpc.RpcError, args: argparse.Namespace | None = None) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if (code == grpc.StatusCode.UNAVAILABLE and args is not None and hasattr(args, "api")
            and _unreachable(details or "")):
        host, port = args.api
        return (f"no node answers at {host}:{port} (start one with `tw-mesh join`, "
                f"or pass --api / set {API_ENV})")
    if code == grpc.StatusCode.UNAUTHENTICATED and args is not None and hasattr(args, "api"):
        return _describe_refusal(args)
    name = code.name if code is not None else "ERROR"
    return f"{details} ({name})"


def _describe_refusal(args: argparse.Namespace) -> str:
    from taskworker.api_token import TOKEN_ENV, TOKEN_FILE

    host, port = args.api
    source = getattr(args, "api_token_source", None)
    if source is None:
        searched = getattr(args, "api_token_searched", "--api-token-file or $" + TOKEN_ENV)
        return (f"the node at {host}:{port} requires an API token and none was found (looked "
                f"in {searched}); pass --api-token-file DATA_DIR/{TOKEN_FILE} of that node or "
                f"set {TOKEN_ENV} (UNAUTHENTICATED)")
    return (f"the node at {host}:{port} refused the API token from {source}: it is neither "
            f"that node's token (in its DATA_DIR/{TOKEN_FILE}) nor one of its users' tokens "
            "(UNAUTHENTICATED)")


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; turn every expected failure into one line on stderr."""
    from mesh.errors import MeshError

    try:
        return func(args)
    except BrokenPipeError:
        # the reader went away (`tw-mesh get CID | head`): quiet, as Unix tools are; stdout is
        # pointed at /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except CliError as exc:
        print(f"tw-mesh: error: {exc}", file=sys.stderr)
    except grpc.RpcError as exc:
        print(f"tw-mesh: error: {describe_rpc_error(exc, args)}", file=sys.stderr)
    except MeshError as exc:
        print(f"tw-mesh: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"tw-mesh: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("tw-mesh: interrupted", file=sys.stderr)
        return 130
    return EXIT_ERROR
