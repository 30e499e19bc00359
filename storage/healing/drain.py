"""Graceful leave: hand every fragment and manifest this node keeps to its next owners.

For each file this node holds fragments of, find its manifest (kept here, or through the
file's document record), locate the fragments, and give each local fragment that no other live
peer holds to the closest live peer (not this one) that holds nothing of that stripe yet --
exactly where repair would have rebuilt it, so a planned departure never lowers redundancy and
costs 1x the bytes instead of k x. Manifests go to the m+1 closest peers other than this one.
Local copies are deleted once handed off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mesh.errors import MeshError
from storage.files import FileStore
from storage.fragstore import FragmentStore
from storage.healing.locate import locate, pick_target
from storage.manifest import Manifest, ManifestStore, manifest_key, verify_manifest
from storage.placement import Network

log = logging.getLogger(__name__)


async def _manifest_for(files: FileStore, local: dict[str, Manifest],
                        file_id: str) -> Manifest | None:
    if file_id in local:
        return local[file_id]
    try:
        cid = await files.documents.current(file_id)
        for m in await files.fetch_manifests(cid):
            if m.file_id == file_id:
                return m
    except MeshError as exc:
        log.warning("drain: no manifest for %s: %s", file_id, exc)
    return None


async def drain(network: Network, fragments: FragmentStore, manifests: ManifestStore,
                files: FileStore, live: set[bytes]) -> dict[str, Any]:
    me = network.self_id
    live = live - {me}
    local: dict[str, Manifest] = {}
    for cid in manifests.cids():
        for signed in manifests.get(cid):
            try:
                m = verify_manifest(signed, cid)
            except MeshError:
                continue
            local[m.file_id] = m
    by_file: dict[str, list[tuple[str, int]]] = {}
    for info in await asyncio.to_thread(fragments.list):
        for file_id, index in info.refs:
            by_file.setdefault(file_id, []).append((info.hash, index))
    moved = kept_elsewhere = failed = 0
    done: set[str] = set()
    stuck: set[str] = set()
    for file_id, items in sorted(by_file.items()):
        found = await _manifest_for(files, local, file_id)
        if found is None:
            stuck.update(h for h, _ in items)
            failed += len(items)
            continue
        m = found
        loc = await locate(network, m, live=live)
        taken: dict[int, set[bytes]] = {}
        for h, index in items:
            s, i = divmod(index, 256)
            if s >= len(m.body.stripes) or i >= loc.n:
                continue
            others = [p for p in loc.held.get((s, i), []) if p != me]
            if others:
                kept_elsewhere += 1
                done.add(h)
                continue
            data = await asyncio.to_thread(fragments.get, h)
            if data is None:
                continue                      # rotted here: repair rebuilds it elsewhere
            placed = False
            avoid: set[bytes] = {me}
            while not placed:
                target = pick_target(loc, s, i, taken.setdefault(s, set()), avoid=avoid)
                if target is None:
                    break
                try:
                    await (await network.client(target)).store_fragment(
                        file_id, index, data, bytes.fromhex(h))
                except MeshError as exc:
                    log.info("drain: %s refused fragment: %s", target.hex()[:16], exc)
                    avoid.add(target)
                    continue
                taken[s].add(target)
                loc.held.setdefault((s, i), []).append(target)
                placed = True
            if placed:
                moved += 1
                done.add(h)
            else:
                stuck.add(h)
                failed += 1
    for h in done - stuck:
        await asyncio.to_thread(fragments.delete, h)
    copied = 0
    for m in local.values():
        peers = [p for p in await network.closest(manifest_key(m.cid), m.body.m + 2)
                 if p != me][: m.body.m + 1]
        for peer in peers:
            try:
                await (await network.client(peer)).store_manifest(m.signed)
                copied += 1
            except MeshError:
                pass
    log.info("drained: %d fragment(s) handed off, %d already elsewhere, %d failed, "
             "%d manifest copies", moved, kept_elsewhere, failed, copied)
    return {"moved": moved, "already_elsewhere": kept_elsewhere, "failed": failed,
            "manifest_copies": copied}
