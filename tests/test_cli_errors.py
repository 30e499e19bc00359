"""The CLI's one-line errors: an UNAVAILABLE that the node itself answered is shown as the
node said it, and only a call that reached no node says that no node answers."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from taskworker.cli_common import describe_rpc_error

METHOD = "/taskworker.ComputeService/Deploy"


def _refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.UNAVAILABLE, "no DHT node stored the claim")


@pytest.fixture
def server_port() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    handler = grpc.method_handlers_generic_handler("taskworker.ComputeService", {
        "Deploy": grpc.unary_unary_rpc_method_handler(_refuse)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


def _error(port: int) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"", timeout=10)
    return info.value


def test_a_node_s_own_unavailable_is_shown_as_it_said(server_port: int) -> None:
    args = argparse.Namespace(api=("127.0.0.1", server_port))
    message = describe_rpc_error(_error(server_port), args)
    assert message == "no DHT node stored the claim (UNAVAILABLE)"


def test_no_node_at_the_port_says_so() -> None:
    with socket.socket() as s:       # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        args = argparse.Namespace(api=("127.0.0.1", port))
        message = describe_rpc_error(_error(port), args)
    assert message.startswith(f"no node answers at 127.0.0.1:{port}")
