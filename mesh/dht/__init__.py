"""Kademlia membership for tw-mesh: PyPI kademlia 2.2.3 subclassed and wrapped (not copied).

``Membership`` is the interface the rest of the node uses; ``MeshServer``, ``MeshProtocol`` and
``MeshRoutingTable`` are the fixed kademlia layers underneath.
"""

from mesh.dht.membership import Membership, MembershipEvent
from mesh.dht.peers import DEFAULT_MESH, PeerView, check_mesh_name
from mesh.dht.protocol import MeshProtocol
from mesh.dht.routing import MeshRoutingTable
from mesh.dht.server import MeshServer
from mesh.dht.storage import RecordStorage

__all__ = ["DEFAULT_MESH", "Membership", "MembershipEvent", "MeshProtocol", "MeshRoutingTable",
           "MeshServer", "PeerView", "RecordStorage", "check_mesh_name"]
