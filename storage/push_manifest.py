"""What every Push path builds the same way: the fragments' holders and the manifest body.

A Push goes inline, in one stripe or streamed (storage/push.py), but each signs the same kind of
manifest: the file key sealed to the owner and every reader (or published, for a public file),
the filename sealed under that key, the codec's parameters, and the stripes with their holders.
Built in one place so the paths cannot drift apart in what a reader can open or verify.
"""

from __future__ import annotations

import time

from proto import storage_pb2
from storage.codec import Codec
from storage.crypto import seal_key_to, seal_stripe
from storage.placement import Network
from storage.results import FILENAME_INDEX, PushOptions
from storage.upload import Placer


async def choose_holders(network: Network, pkey: bytes,
                         codec: Codec) -> tuple[Placer, list[str]]:
    """The closest live peers for the fragments, and a warning when there are too few."""
    ranked = await network.closest(pkey, codec.n + min(codec.n, 8))
    placer = Placer(ranked, codec.n)
    if len(set(placer.current)) >= codec.n:
        return placer, []
    return placer, [f"only {len(set(placer.current))} live storage peer(s) for {codec.n} "
                    "fragments: several fragments share a holder (under-replicated)"]


def manifest_body(cid: str, file_id: str, size: int, codec: Codec, opts: PushOptions,
                  owner_pub: bytes, file_key: bytes, pkey: bytes, holders: list[bytes],
                  stripes: list[storage_pb2.Stripe], under: bool,
                  created_ms: int | None = None,
                  sealed_name: bytes | None = None) -> storage_pb2.ManifestBody:
    """The unsigned manifest; ``sealed_name`` reuses the filename a first body sealed."""
    if sealed_name is None:
        sealed_name = seal_stripe(
            file_key, opts.filename.encode(), context=b"filename\x00" + file_id.encode(),
            index=FILENAME_INDEX, last=True) if opts.filename else b""
    keys = [storage_pb2.SealedKey(recipient=r, sealed=seal_key_to(r, file_key))
            for r in dict.fromkeys([owner_pub, *opts.readers])]
    return storage_pb2.ManifestBody(
        format=1, cid=cid, file_id=file_id, size=size, k=codec.k, m=codec.m,
        stripe_size=opts.stripe_size, codec_format=int(codec.params()["format"]),
        packet_size=codec.packet_size, matrix=codec.matrix, owner_key=owner_pub,
        keys=[] if opts.public else keys, public_key=file_key if opts.public else b"",
        filename_sealed=sealed_name, placement_key=pkey, holders=holders,
        stripes=stripes, under_replicated=under,
        created_ms=int(time.time() * 1000) if created_ms is None else created_ms)
