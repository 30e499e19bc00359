"""Where a call can run: the live places that serve the current generation of a function.

A deployed function (code in the mesh, compute/deploy.py) runs on any live compute peer and,
when this node serves compute, here; a function registered by a worker runs only where its
provider records are, and only on peers membership counts live (the router's fallback takes
the records' own addresses when none is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mesh.context import MeshContext
from proto import mesh_pb2

from .registry import Provider, current_generation


@dataclass
class Target:
    """One place a call can run: a node, and what to ask it."""

    node_id: bytes
    address: str
    load: int
    code_cid: str = ""
    entry: str = ""
    worker_id: str = ""
    peer: mesh_pb2.PeerRecord | None = None
    deploy_seq: int = 0
    deployer: bytes = b""
    wall_time_s: float = 0.0


def live_targets(ctx: MeshContext, me: bytes, providers: list[Provider], *,
                 serves_locally: Callable[[], bool]) -> list[Target]:
    """Live places that can serve the current generation of a function."""
    live = {v.node_id: v for v in ctx.membership.live_peers()}
    chosen = current_generation(providers)
    out: list[Target] = []
    if chosen and chosen[0].deployed:
        deploy = max(chosen, key=lambda p: (p.record.deploy_seq, p.seq)).record
        cid, entry = deploy.code_cid, deploy.entry or deploy.function
        seq, by, wall = deploy.deploy_seq, deploy.node_id, deploy.wall_time_s
        if serves_locally():
            out.append(Target(me, ctx.address, 0, cid, entry, deploy.worker_id,
                              deploy_seq=seq, deployer=by, wall_time_s=wall))
        for view in live.values():
            if "compute" in view.roles:
                out.append(Target(view.node_id, view.address, view.record.load, cid,
                                  entry, deploy.worker_id, peer=view.record,
                                  deploy_seq=seq, deployer=by, wall_time_s=wall))
        return out
    for p in chosen:
        if p.node_id == me:
            out.append(Target(me, ctx.address, p.record.load,
                              worker_id=p.record.worker_id,
                              wall_time_s=p.record.wall_time_s))
        elif p.node_id in live:
            view = live[p.node_id]
            out.append(Target(p.node_id, view.address, p.record.load,
                              worker_id=p.record.worker_id, peer=view.record,
                              wall_time_s=p.record.wall_time_s))
    return out


def record_targets(me: bytes, providers: list[Provider]) -> list[Target]:
    """Last resort when no provider is on a live peer: the addresses the records give.
    Membership can wrongly drop an overloaded peer (its pings time out); a dead one
    refuses the connection at once."""
    out = []
    for p in current_generation(providers):
        if p.record.address and p.node_id != me:
            out.append(Target(p.node_id, p.record.address, p.record.load, p.record.code_cid,
                              p.record.entry or p.record.function, p.record.worker_id,
                              deploy_seq=p.record.deploy_seq, deployer=p.record.node_id))
    return out
