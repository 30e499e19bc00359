"""Deployed code: content-addressed blobs (CIDv1 of the UTF-8 source) replicated on the
``replicas`` peers closest to the CID, fetched and verified by any compute peer that serves it.

Storage choice: the compute peer methods ``compute.StoreCode`` / ``compute.FetchCode`` (not
the FileService), so deployed code does not depend on the storage capability: a module is
small, and a verified whole copy on each of r peers is simpler and more robust than fragments.
Every peer that serves a deployed function keeps its copy and answers FetchCode with it.
"""

from __future__ import annotations

import ast
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


# --- preparing user source for the sandbox -------------------------------------------------

def _allowed_modules() -> frozenset[str]:
    from compute.sandbox.guard import ALLOWED_MODULES

    return ALLOWED_MODULES


def _stand_in(name: str, module: str) -> str:
    message = f"module {module!r} is not available inside the sandbox"
    return (f"{name} = type({module!r}, (), {{'__getattr__': lambda _s, _n: "
            f"(_ for _ in ()).throw(ImportError({message!r}))}})()")


def _quote_annotations(source: str, tree: ast.Module) -> str:
    """What ``from __future__ import annotations`` means (the sandbox refuses the import):
    every annotation becomes a string literal, in place, line count unchanged."""
    spans: list[tuple[int, int, int, int]] = []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        for ann in found:
            if ann is not None and ann.end_lineno is not None and ann.end_col_offset is not None:
                spans.append((ann.lineno, ann.col_offset, ann.end_lineno, ann.end_col_offset))
    lines = [line.encode() for line in source.splitlines(keepends=True)]
    for start, col, end, end_col in sorted(spans, reverse=True):
        first, last = lines[start - 1], lines[end - 1]
        text = b"".join([first[col:]] + lines[start:end - 1] + [last[:end_col]]) \
            if end > start else first[col:end_col]
        literal = repr(" ".join(text.decode().split())).encode() + b"\n" * (end - start)
        lines[start - 1] = first[:col] + literal + last[end_col:]
        for index in range(start, end):
            lines[index] = b""
    out = b"".join(lines).decode()
    try:
        ast.parse(out)
    except SyntaxError:
        return source
    return out


def sandbox_source(source: str) -> str:
    """``source`` with disallowed top-level imports stubbed and the main block removed,
    keeping every other line where it was (so tracebacks show the user's line numbers)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body):
        source = _quote_annotations(source, tree)
        tree = ast.parse(source)
    allowed = _allowed_modules()
    lines = source.splitlines()
    owners: dict[int, int] = {}
    for index, node in enumerate(tree.body):
        for at in range(node.lineno, (node.end_lineno or node.lineno) + 1):
            owners.setdefault(at, index)
            if owners[at] != index:
                owners[at] = -1          # two statements share a line: leave it alone
    edits: dict[int, tuple[int, str]] = {}
    for index, node in enumerate(tree.body):
        start, end = node.lineno, node.end_lineno or node.lineno
        if any(owners.get(x) != index for x in range(start, end + 1)) or node.col_offset:
            continue
        if _is_main_guard(node):
            edits[start] = (end, "pass")
        elif isinstance(node, ast.Import):
            parts = []
            for alias in node.names:
                if alias.name in allowed:
                    parts.append(f"import {alias.name}" + (f" as {alias.asname}"
                                                            if alias.asname else ""))
                elif alias.asname or "." not in alias.name:
                    parts.append(_stand_in(alias.asname or alias.name, alias.name))
                else:
                    top = alias.name.split(".")[0]
                    parts.append(_stand_in(top, top))
            edits[start] = (end, "; ".join(parts))
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            edits[start] = (end, "pass")   # only annotations changes 3.11; done above
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module not in allowed:
            names = [a for a in node.names if a.name != "*"]
            if len(names) == len(node.names):
                edits[start] = (end, "; ".join(_stand_in(a.asname or a.name, str(node.module))
                                               for a in names))
    out: list[str] = []
    skip_until = 0
    for number, line in enumerate(lines, start=1):
        if number <= skip_until:
            out.append("")
            continue
        edit = edits.get(number)
        if edit is None:
            out.append(line)
        else:
            skip_until, replacement = edit
            out.append(replacement)
    return "\n".join(out) + "\n"


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    parts = [node.test.left, *node.test.comparators]
    return (any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts)
            and any(isinstance(p, ast.Constant) and p.value == "__main__" for p in parts))
