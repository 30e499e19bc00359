"""What a node gives the services built on the mesh (storage, compute, ...).

Services receive a ``MeshContext`` and implement ``MeshService``; the composition root
(``taskworker.node``) builds both. Keeping this in ``mesh`` lets ``storage`` and ``compute``
depend downwards only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from mesh.channel import ChannelPool, ChannelServer, PeerChannel
from mesh.dht import Membership
from mesh.identity import Identity
from proto import mesh_pb2


@dataclass
class MeshContext:
    identity: Identity
    membership: Membership
    channels: ChannelPool
    channel_server: ChannelServer
    data_dir: Path
    address: str                                   # this node's peer address host:port
    roles: tuple[str, ...] = ("storage", "compute")
    settings: dict[str, Any] = field(default_factory=dict)   # parsed CLI/config options
    # Services register themselves here by name in their create(); a service that needs
    # another (compute needs the proxy for HostServices) looks it up at call time.
    registry: dict[str, Any] = field(default_factory=dict)

    def peer(self, record: mesh_pb2.PeerRecord) -> PeerChannel:
        """The sealed channel to a peer named by its verified peer record."""
        return self.channels.peer(record.node_id, record.address, record.channel_port)


class MeshService(Protocol):
    """A capability plugged into a node (storage, compute, monitor, ...)."""

    name: str

    def attach(self, api_server: grpc.aio.Server) -> None:
        """Register local-API servicers; peer handlers go on ctx.channel_server."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """A JSON-able status document for `tw-mesh status` and the monitor."""
        ...

    def load(self) -> int:
        """Work in flight, published in the peer record."""
        ...
