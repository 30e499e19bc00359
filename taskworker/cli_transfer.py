"""`tw-mesh put` and `tw-mesh get`: the commands that move a file's bytes.

Apart from the other storage commands (cli_storage.py) because only these stream: put streams
files larger than UNARY_MAX (and stdin) with PushStream; get always uses GetStream and writes
to a temporary file next to the target, renamed into place only after the node finished
without error and the CID recomputed here matched, so a failed get leaves no partial output.
Without -o the verified bytes go to stdout (spooled first, for the same reason). A progress
line goes to stderr when it is a terminal and the file is large.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker.cli_common import CliError, add_api_flag, add_json_flag, api_channel, print_json

UNARY_MAX = 4 * 2**20
CHUNK = 1 * 2**20
PROGRESS_MIN = 8 * 2**20
TIMEOUT = 24 * 3600.0


class Progress:
    """A tiny progress printer on stderr (only when it is a terminal and the job is big)."""

    def __init__(self, label: str, total: int | None, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        big = total is None or total >= PROGRESS_MIN
        self.enabled = sys.stderr.isatty() and big if enabled is None else enabled

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.2:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6) / 1e6
        if self.total:
            pct = 100.0 * self.done / self.total
            bar = "#" * int(pct / 4)
            text = f"{self.label} [{bar:<25}] {pct:5.1f}% {self.done / 1e6:.1f} MB {rate:.1f} MB/s"
        else:
            text = f"{self.label} {self.done / 1e6:.1f} MB {rate:.1f} MB/s"
        sys.stderr.write("\r" + text)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()


def _read_chunks(fh: IO[bytes], progress: Progress) -> Iterator[bytes]:
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return
        progress.update(len(chunk))
        yield chunk


def cmd_put(args: argparse.Namespace) -> int:
    header = taskworker_pb2.PushRequest(user_id=args.user or "", public=args.public,
                                       k=args.k or 0, m=args.m or 0,
                                       readers=args.reader or [])
    if args.file == "-":
        fh: IO[bytes] = sys.stdin.buffer
        size = None
        header.filename = args.name or ""
    else:
        path = Path(args.file)
        if not path.is_file():
            raise CliError(f"{args.file}: not a readable file")
        fh = open(path, "rb")  # noqa: SIM115 - closed below
        size = path.stat().st_size
        header.filename = args.name if args.name is not None else path.name
    progress = Progress("put", size)
    try:
        with api_channel(args) as channel:
            stub = taskworker_pb2_grpc.FileServiceStub(channel)
            if size is not None and size <= UNARY_MAX:
                header.file_data = fh.read()
                resp = stub.Push(header, timeout=TIMEOUT)
            else:
                def chunks() -> Iterator[taskworker_pb2.PushChunk]:
                    yield taskworker_pb2.PushChunk(header=header)
                    for data in _read_chunks(fh, progress):
                        yield taskworker_pb2.PushChunk(data=data)
                resp = stub.PushStream(chunks(), timeout=TIMEOUT)
    finally:
        progress.close()
        if fh is not sys.stdin.buffer:
            fh.close()
    for warning in resp.warnings:
        print(f"tw-mesh: warning: {warning}", file=sys.stderr)
    if args.json:
        print_json({"cid": resp.cid, "file_id": resp.file_id, "size": resp.size, "k": resp.k,
                    "m": resp.m, "fragments_placed": resp.fragments_placed,
                    "under_replicated": resp.under_replicated, "warnings": list(resp.warnings)})
    else:
        print(resp.cid)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from storage.cid import CidHasher

    request = taskworker_pb2.GetRequest(file_id=args.ref, user_id=args.user or "",
                                        version=args.version)
    if args.output and args.output != "-":
        target = Path(args.output)
        if target.is_dir():
            raise CliError(f"{args.output} is a directory")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                        dir=target.parent or Path("."))
        out: IO[bytes] = os.fdopen(fd, "wb")
    else:
        target, tmp_name = None, ""
        out = tempfile.SpooledTemporaryFile(max_size=64 * 2**20)  # noqa: SIM115
    ok = False
    hasher = CidHasher()
    header: Any = None
    progress: Progress | None = None
    try:
        with api_channel(args) as channel:
            stub = taskworker_pb2_grpc.FileServiceStub(channel)
            for chunk in stub.GetStream(request, timeout=TIMEOUT):
                if chunk.HasField("header"):
                    header = chunk.header
                    if header.conflicts:
                        heads = ", ".join(f"{h.version[:16]} ({h.cid})" for h in header.conflicts)
                        raise CliError(f"{args.ref} has {len(header.conflicts)} conflicting "
                                       f"heads: {heads}; get one with --version, or resolve "
                                       "with a revise naming them all")
                    progress = Progress("get", header.size)
                    continue
                hasher.update(chunk.data)
                out.write(chunk.data)
                if progress is not None:
                    progress.update(len(chunk.data))
        if header is None:
            raise CliError("the node sent no file header")
        if hasher.cid() != header.cid:
            raise CliError(f"content does not match its CID {header.cid} (got {hasher.cid()})")
        out.flush()
        if target is not None:
            os.fsync(out.fileno())
            out.close()
            os.replace(tmp_name, target)
        else:
            out.seek(0)
            while block := out.read(CHUNK):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
        ok = True
    finally:
        if progress is not None:
            progress.close()
        with contextlib.suppress(OSError):
            out.close()
        if not ok and tmp_name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
    if target is not None and not args.quiet:
        print(f"{header.cid} -> {target} ({header.size} bytes)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the put and get subcommands."""
    p = sub.add_parser("put", help="store a file in the mesh and print its CID",
                       description="Store FILE ('-' for stdin): encrypted, erasure-coded over "
                       "the XOR-closest peers. Prints the CID (with --json also the file_id).",
                       epilog="example:\n  tw-mesh put report.pdf --k 4 --m 2 --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="path of the file, or - for stdin")
    p.add_argument("--user", help="keyring user that owns the file (default: 'default', or the "
                   "user whose token you use)")
    p.add_argument("--public", action="store_true", help="anyone with the CID can read it")
    p.add_argument("--reader", action="append", metavar="USER|PUBKEY",
                   help="also let this user read it (repeatable)")
    p.add_argument("--k", type=int, help="data fragments per stripe (node default 4)")
    p.add_argument("--m", type=int, help="parity fragments per stripe (node default 2)")
    p.add_argument("--name", help="filename recorded as metadata (default: the file's name)")
    add_api_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("get", help="fetch a file by CID or file_id",
                       description="Fetch a file; the CID is verified before the output file "
                       "appears (a failed get leaves nothing behind).",
                       epilog="example:\n  tw-mesh get bafkrei... -o copy.pdf",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="CID", help="a CID (exact content) or file_id (current version)")
    p.add_argument("-o", "--output", help="write here (default: stdout)")
    p.add_argument("--user", help="keyring user reading the file (default: 'default', or the "
                   "user whose token you use)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    p.add_argument("--version", default="",
                   help="a version id from `tw-mesh log FILE_ID` (default: the current head)")
    add_api_flag(p)
    p.set_defaults(func=cmd_get)
