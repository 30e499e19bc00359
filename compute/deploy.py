"""Deployed code: content-addressed blobs (CIDv1 of the UTF-8 source) replicated on the
``replicas`` peers closest to the CID, fetched and verified by any compute peer that serves it.

Storage choice: the compute peer methods ``compute.StoreCode`` / ``compute.FetchCode`` (not
the FileService), so deployed code does not depend on the storage capability: a module is
small, and a verified whole copy on each of r peers is simpler and more robust than fragments.
Every peer that serves a deployed function keeps its copy and answers FetchCode with it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
from pathlib import Path

from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, MeshError, NotFoundError
from proto import mesh_pb2
from storage.cid import CidError, cid_for

from .peer import ComputePeer
from .prepare import sandbox_source

__all__ = ["CodeStore", "check_code", "cid_key", "sandbox_source"]

log = logging.getLogger(__name__)

MAX_CODE_BYTES = 1 * 2**20   # = the sandbox's default source limit
DEFAULT_REPLICAS = 3
MAX_STORED = 2048             # blobs kept on disk; the least recently written go first


def cid_key(cid: str) -> bytes:
    """The DHT key whose closest peers hold the code."""
    return hashlib.blake2b(b"code\x00" + cid.encode(), digest_size=20).digest()


def check_code(cid: str, code: bytes) -> None:
    if len(code) > MAX_CODE_BYTES:
        raise InvalidArgumentError(f"code of {len(code)} bytes exceeds {MAX_CODE_BYTES}")
    try:
        actual = cid_for(code)
    except CidError as exc:  # pragma: no cover - cid_for does not raise on bytes
        raise InvalidArgumentError(str(exc)) from None
    if actual != cid:
        raise InvalidArgumentError(f"code does not match its CID {cid[:16]}…")
    try:
        code.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError("code is not UTF-8 text") from None


class CodeStore:
    """Local copies on disk (``data_dir/compute/code/<cid>``) plus a small memory cache."""

    def __init__(self, ctx: MeshContext, replicas: int = DEFAULT_REPLICAS) -> None:
        self.ctx = ctx
        self.replicas = replicas
        self.dir = Path(ctx.data_dir) / "compute" / "code"
        self._memory: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._fetching: dict[str, asyncio.Task[str]] = {}
        self._stored = len(list(self.dir.iterdir())) if self.dir.is_dir() else 0

    def _path(self, cid: str) -> Path:
        if not cid.isalnum():
            raise InvalidArgumentError("malformed CID")
        return self.dir / cid

    def put(self, cid: str, code: bytes) -> None:
        check_code(cid, code)
        path = self._path(cid)
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(code)
            tmp.replace(path)
            self._stored += 1
            if self._stored > MAX_STORED:
                self._evict()
        self._remember(cid, code.decode())

    def _evict(self) -> None:
        """Any peer may store code here: keep the disk use bounded (MAX_STORED × 1 MiB)."""
        entries = sorted(self.dir.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in entries[: max(0, len(entries) - MAX_STORED * 3 // 4)]:
            old.unlink(missing_ok=True)
            self._memory.pop(old.name, None)
        self._stored = min(len(entries), MAX_STORED * 3 // 4)

    def get_local(self, cid: str) -> bytes | None:
        if cid in self._memory:
            self._memory.move_to_end(cid)
            return self._memory[cid].encode()
        path = self._path(cid)
        try:
            code = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            check_code(cid, code)
        except InvalidArgumentError:
            log.warning("stored code %s is corrupt; dropping it", cid[:16])
            path.unlink(missing_ok=True)
            return None
        self._remember(cid, code.decode())
        return code

    def _remember(self, cid: str, source: str) -> None:
        self._memory[cid] = source
        self._memory.move_to_end(cid)
        while len(self._memory) > 64:
            self._memory.popitem(last=False)

    async def source(self, cid: str) -> str:
        """The verified source for ``cid``: from memory, disk, or the mesh (single flight)."""
        cached = self._memory.get(cid)
        if cached is not None:
            return cached
        local = self.get_local(cid)
        if local is not None:
            return local.decode()
        task = self._fetching.get(cid)
        if task is None:
            task = asyncio.create_task(self._fetch(cid))
            self._fetching[cid] = task
            task.add_done_callback(lambda _t: self._fetching.pop(cid, None))
        return await asyncio.shield(task)

    async def _candidates(self, cid: str) -> list[mesh_pb2.PeerRecord]:
        closest = await self.ctx.membership.closest_peers(cid_key(cid), 2 * self.replicas)
        seen = {p.node_id for p in closest}
        rest = [v.record for v in self.ctx.membership.live_peers() if v.node_id not in seen]
        return [p for p in [*closest, *rest] if p.node_id != self.ctx.identity.node_id]

    async def _fetch(self, cid: str) -> str:
        for peer in await self._candidates(cid):
            try:
                code = await ComputePeer(self.ctx.peer(peer)).fetch_code(cid, timeout=5.0)
            except MeshError as exc:
                log.debug("fetch of %s from %s failed: %s", cid[:16], peer.address, exc)
                continue
            if code is None:
                continue
            try:
                self.put(cid, code)
            except InvalidArgumentError as exc:
                log.warning("peer %s sent bad code for %s: %s", peer.address, cid[:16], exc)
                continue
            return code.decode()
        raise NotFoundError(f"deployed code {cid} is not available from any live peer")

    async def replicate(self, cid: str, code: bytes) -> int:
        """Store locally and on the ``replicas`` compute peers closest to the CID (storage-only
        nodes refuse code); returns the copies held."""
        self.put(cid, code)
        me = self.ctx.identity.node_id
        closest = await self.ctx.membership.closest_peers(cid_key(cid), 4 * self.replicas + 1)
        peers = [p for p in closest if p.node_id != me and "compute" in p.roles][: self.replicas]

        async def one(peer: mesh_pb2.PeerRecord) -> bool:
            try:
                return await ComputePeer(self.ctx.peer(peer)).store_code(cid, code)
            except MeshError as exc:
                log.info("storing code %s on %s failed: %s", cid[:16], peer.address, exc)
                return False

        results = await asyncio.gather(*(one(p) for p in peers))
        return 1 + sum(results)
