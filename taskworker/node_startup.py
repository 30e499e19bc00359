"""What a node opens when it starts, and how starting fails: its two gRPC servers' ports, the
local API's health and reflection services, and joining the mesh through bootstrap peers.

Every failure is a ``StartupError`` whose message names the fix (another port, ``--mesh``,
``--allow-remote-api``), since the user sees it as the one line ``tw-mesh join`` prints.
"""

from __future__ import annotations

import importlib
import logging
import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.channel.links import MAX_MESSAGE_BYTES
from mesh.dht import Membership
from mesh.errors import MeshError
from proto import taskworker_pb2

log = logging.getLogger("tw-mesh")

# Protos whose services are served on the local API besides taskworker.proto's.
API_EXTRA_PROTOS = ("proto.compute_pb2", "proto.proxy_pb2")
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),     # a second node on a busy port must fail, not share it
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
# The peer gRPC port of a node that also serves the channel over TCP. Peers reach a node on the
# transport its record advertises (ChannelPool.peer), so no honest peer sends this port more
# than nothing; but grpc reads a unary request whole before any handler (or handshake) runs and
# its limits are per server, so at 64 MiB anyone could park 64 MiB per stream here unread.
PEER_GRPC_BESIDE_TCP_BYTES = 4096     # a handshake request is at most 191 bytes
PEER_OPTIONS_BESIDE_TCP = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", PEER_GRPC_BESIDE_TCP_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_concurrent_streams", 16),
]


class StartupError(MeshError):
    """The node could not start (port in use, bootstrap unreachable, ...)."""


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def free_port(host: str) -> int:
    """A port free for UDP (the caller then binds TCP on the same number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def bind_peer_port(server: grpc.aio.Server, host: str, port: int) -> int:
    """The peer server's TCP port: ``port``, or (0) one also free for the DHT's UDP."""
    for _ in range(20):
        candidate = port or free_port(host)
        try:
            bound = server.add_insecure_port(f"{host}:{candidate}")
        except RuntimeError:
            bound = 0
        if bound:
            return bound
        if port:
            break
    raise StartupError(f"cannot listen on {host}:{port or 'any port'} (TCP): address in use?")


def bind_api_port(server: grpc.aio.Server, host: str, port: int) -> int:
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise StartupError(f"cannot serve the local API on {host}:{port}: "
                           "address in use? (pass --api HOST:PORT)")
    return bound


def add_health_and_reflection(api_server: grpc.aio.Server) -> None:
    servicer = health.HealthServicer()
    for name in ("", "taskworker.FileService", "taskworker.RPCService",
                 "taskworker.DNSService", "taskworker.NodeService"):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, api_server)
    names = [s.full_name for s in taskworker_pb2.DESCRIPTOR.services_by_name.values()]
    for module in API_EXTRA_PROTOS:       # capability-specific local-API services
        try:
            descriptor = importlib.import_module(module).DESCRIPTOR
        except ModuleNotFoundError:
            continue
        names += [s.full_name for s in descriptor.services_by_name.values()]
    for name in names:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME,
                                         reflection.SERVICE_NAME], api_server)


async def join(membership: Membership, bootstrap: list[tuple[str, int]], mesh: str,
               host: str, port: int) -> None:
    """Join through ``bootstrap`` (none: this node starts a new mesh)."""
    if not bootstrap:
        log.info("no --bootstrap given: this node starts a new mesh; other nodes join with "
                 "`tw-mesh join --bootstrap %s:%d --listen HOST:PORT --api HOST:PORT "
                 "--data-dir DIR`", host, port)
        return
    reached = await membership.bootstrap(bootstrap)
    if reached == 0:
        for (ip, other_port), other in membership.foreign.items():
            raise StartupError(f"the bootstrap peer at {ip}:{other_port} belongs to mesh "
                               f"{other!r}, this node to {mesh!r} (pass --mesh {other} to join "
                               "that mesh)")
        targets = ", ".join(f"{h}:{p}" for h, p in bootstrap)
        raise StartupError(f"no bootstrap peer answered ({targets})")
    log.info("joined the mesh through %d bootstrap address(es); %d peers live",
             len(bootstrap), reached)
