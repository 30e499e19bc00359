"""The encrypted, mutually authenticated peer channel (protocol: docs/channel.md).

Server side: ``ChannelServer`` (register handlers by method name, add to a grpc.aio server).
Client side: ``ChannelPool.peer(node_id, address)`` → ``PeerChannel.unary`` / ``.stream``.
"""

from mesh.channel.client import ChannelPool, ChannelTimeouts, PeerChannel
from mesh.channel.server import Caller, ChannelServer, StreamHandler, UnaryHandler
from mesh.channel.session import SessionPolicy

__all__ = [
    "Caller",
    "ChannelPool",
    "ChannelServer",
    "ChannelTimeouts",
    "PeerChannel",
    "SessionPolicy",
    "StreamHandler",
    "UnaryHandler",
]
