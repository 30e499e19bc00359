"""Fragment copies that land after a Push gave their store up: found, then deleted.

A Push gives a holder's store up after the tail delay (storage/tail.py) and sends the fragment
to a spare peer; the final manifest records the spare. The call is cancelled on our side only:
a frozen holder (SIGSTOP, a hung disk) still runs the store when it resumes (the channel server
runs a handler to the end), so it ends up with a copy no manifest records. Content-addressed
ciphertext, so harmless, but it takes disk for good: repair deletes extra copies only of the
fragments it moves, and nothing else looks for them.

Each Push keeps a ``LateStores`` (storage/late_stores.py): its fragment stores cancelled while
in flight (peer, file_id, hashes). Once the final manifest is signed and stored, each such
fragment that the manifest records at another holder, alone in its stripe there (so the late
copy would add no spread the stripe lacks), becomes a job for this node's ``LateCopies``, with
the signed manifest. Each attempt first asks the peer HasFragments, then, if the copy is there,
DeleteFragment (storage/fragment_handlers.py), which removes a copy only when that manifest names
the fragment and does not record it at that peer. The read-only question goes first because a
call to a frozen peer is given up on our side but runs when the peer resumes: a delete given up
could land unseen and make the next attempts look like a copy that never landed (only a peer
freezing between the two calls still can); an unanswered question changes nothing.

Timings (module constants; ``tw-mesh join --late-copy-delay S`` scales them all, for tests):
the first delete goes FIRST_S after the Push (the peer may still be frozen, the late store not
landed yet), the next ones RETRY_S later, doubling up to MAX_RETRY_S. A job ends when:

- the delete answers removed=True (``late_copies_collected``);
- the peer answered MISSES times that it holds no such copy (or the delete removed nothing),
  spaced by the backoff: the store never landed (``late_copies_abandoned``);
- the peer answers PERMISSION_DENIED: a manifest records the fragment there after all, e.g.
  repair moved it back (``late_copies_kept``); any other refusal abandons it (e.g.
  FAILED_PRECONDITION: a Grant since signed a newer manifest; storage/delete_check.py), but
  UNAVAILABLE (the peer could not confirm the newest manifest with the replicas) is retried;
- MAX_AGE_S after the Push (abandoned). Unanswered or failed calls (the peer still frozen or
  down) are only retried.

Never collected: the queue lives in memory, so a pushing node that stops or restarts forgets
it; a late store landing after its job ended (a disk hung longer than the misses' spacing, a
peer frozen past MAX_AGE_S); jobs beyond MAX_PENDING (``late_copies_dropped``); a store's
same-peer re-send (the channel's hedge, storage/peer_client.py) landing after the delete; a
store that waited out its own deadline instead of being given up (there was no distinct spare:
its fragment doubled up on a holder, where a late copy adds spread); and the manifests and
document records a given-up StoreBatch or replica stores late (small, and superseded by or
identical to the records the Push stored elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.errors import (
    DeadlineExceededError,
    MeshError,
    PeerCallError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from mesh.owned_task import OwnedTask
from proto import storage_pb2
from storage.late_stores import LateStores
from storage.manifest import Manifest

log = logging.getLogger(__name__)

FIRST_S = 60.0          # first delete after the Push
RETRY_S = 60.0          # then after this, doubling
MAX_RETRY_S = 600.0
MAX_AGE_S = 3600.0      # a job still open this long after its Push is abandoned
MISSES = 3              # "not here" answers before a job is abandoned
MAX_PENDING = 1024      # jobs queued at once; more are dropped (counted)
CONCURRENCY = 8         # deletes in flight at once
CALL_TIMEOUT_S = 10.0   # per call: a frozen peer must not hold the queue for long
_TRANSIENT = (UnavailableError, DeadlineExceededError, ResourceExhaustedError)


class Holder(Protocol):
    """The two peer calls a job makes (storage/peer_client.py StorageClient)."""

    async def has_fragments(self, digests: list[bytes], deep: bool = ...) -> list[bool]: ...

    async def delete_fragment(self, digest: bytes, file: str,
                              manifest: storage_pb2.SignedManifest) -> bool: ...


Connect = Callable[[bytes], Awaitable[Holder]]      # e.g. Network.client


@dataclass(frozen=True)
class Timings:
    first: float = FIRST_S
    retry: float = RETRY_S
    max_retry: float = MAX_RETRY_S
    max_age: float = MAX_AGE_S
    misses: int = MISSES

    @classmethod
    def scaled(cls, first: float) -> Timings:
        """Every delay in proportion to the first (``--late-copy-delay``)."""
        f = first / FIRST_S
        return cls(first, RETRY_S * f, MAX_RETRY_S * f, MAX_AGE_S * f)


@dataclass
class Job:
    peer: bytes
    digest: bytes
    file_id: str
    manifest: storage_pb2.SignedManifest
    born: float
    due: float
    tries: int = 0
    misses: int = 0
    done: bool = False


class LateCopies:
    """This node's queue of late copies to delete (owned by StorageService: start/stop)."""

    def __init__(self, connect: Connect, timings: Timings | None = None, *,
                 max_pending: int = MAX_PENDING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timings = timings or Timings()
        self._connect = connect
        self._max = max_pending
        self._clock = clock
        self._jobs: list[Job] = []
        self._wake = asyncio.Event()
        self._task = OwnedTask("late-copies")
        self.counters = {"collected": 0, "abandoned": 0, "kept": 0, "dropped": 0}

    def submit(self, late: LateStores, manifest: Manifest) -> int:
        """Queue the late copies of one finished Push; never blocks. Returns how many."""
        now = self._clock()
        queued = 0
        for peer, digest in late.extra_copies(manifest):
            if len(self._jobs) >= self._max:
                self.counters["dropped"] += 1
                continue
            self._jobs.append(Job(peer, digest, manifest.file_id, manifest.signed, now,
                                  now + self.timings.first))
            queued += 1
        if queued:
            self._wake.set()
        return queued

    def start(self) -> None:
        self._task.start(self._run)

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            if await self.run_due() == 0:
                now = self._clock()
                nxt = min((j.due for j in self._jobs), default=None)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           None if nxt is None else max(0.0, nxt - now))

    async def run_due(self) -> int:
        """Try the jobs due now (up to CONCURRENCY at once); how many were tried."""
        now = self._clock()
        due = [j for j in self._jobs if j.due <= now][:CONCURRENCY]
        if due:
            await asyncio.gather(*(self._attempt(j) for j in due))
            self._jobs = [j for j in self._jobs if not j.done]
        return len(due)

    async def _delete(self, job: Job) -> bool:
        """True if the copy was there and is now deleted; False if the peer has none."""
        peer = await self._connect(job.peer)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            present = await peer.has_fragments([job.digest])
        if not present[0]:
            return False
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await peer.delete_fragment(job.digest, job.file_id, job.manifest)

    async def _attempt(self, job: Job) -> None:
        job.tries += 1
        removed: bool | None
        try:
            removed = await self._delete(job)
        except PermissionDeniedError:
            self._end(job, "kept")                  # recorded there now: it stays
            return
        except PeerCallError as exc:
            if not isinstance(exc, _TRANSIENT):     # a refusal retrying will not change
                log.info("late copy %s on %s not deleted: %s", job.digest.hex()[:16],
                         job.peer.hex()[:16], exc)
                self._end(job, "abandoned")
                return
            removed = None
        except (MeshError, TimeoutError):           # frozen, down, unreachable: retry
            removed = None
        except Exception:                           # a bug: end this job, keep the queue
            log.exception("late copy %s on %s", job.digest.hex()[:16], job.peer.hex()[:16])
            self._end(job, "abandoned")
            return
        if removed:
            self._end(job, "collected")
            return
        if removed is False:
            job.misses += 1
            if job.misses >= self.timings.misses:   # answered, spaced out: it never landed
                self._end(job, "abandoned")
                return
        t = self.timings
        job.due = self._clock() + min(t.retry * 2 ** (job.tries - 1), t.max_retry)
        if job.due - job.born > t.max_age:
            self._end(job, "abandoned")

    def _end(self, job: Job, how: str) -> None:
        job.done = True
        self.counters[how] += 1
        # rare (a store given up on), so worth a line each
        log.info("late copy of fragment %s on %s (a store given up on): %s after %d tries",
                 job.digest.hex()[:16], job.peer.hex()[:16], how, job.tries)

    def status(self) -> dict[str, Any]:
        return {"late_copies_pending": sum(not j.done for j in self._jobs),
                **{f"late_copies_{k}": v for k, v in self.counters.items()}}
