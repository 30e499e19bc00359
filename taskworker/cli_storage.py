"""`tw-mesh` subcommands for storage: put, get, stat, share, user; join flags --k, --m,
--stripe-mib, --reserved-space, --late-copy-delay.

put streams files larger than UNARY_MAX (and stdin) with PushStream; get always uses
GetStream and writes to a temporary file next to the target, renamed into place only after
the node finished without error and the CID recomputed here matched, so a failed get leaves
no partial output. Without -o the verified bytes go to stdout (spooled first, for the same
reason). A progress line goes to stderr when it is a terminal and the file is large.
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


def cmd_stat(args: argparse.Namespace) -> int:
    with api_channel(args) as channel:
        resp = taskworker_pb2_grpc.FileServiceStub(channel).Stat(
            taskworker_pb2.StatRequest(file_id=args.ref, user_id=args.user or "",
                                       deep=args.deep), timeout=600)
    frags = [{"index": f.index, "holder": f.holder, "address": f.address,
              "reachable": f.reachable, "healthy": f.healthy} for f in resp.fragments]
    if args.json:
        print_json({"cid": resp.cid, "size": resp.size, "k": resp.k, "m": resp.m,
                    "health": resp.health, "filename": resp.filename, "owner": resp.owner,
                    "fragments": frags})
        return 0
    print(f"{resp.cid}  {resp.size} bytes  k={resp.k} m={resp.m}  {resp.health}")
    if resp.filename:
        print(f"  filename {resp.filename!r}")
    print(f"  owner {resp.owner}")
    for f in frags:
        state = "ok" if f["healthy"] else ("unreachable" if not f["reachable"] else "missing")
        print(f"  fragment {f['index']:>3}  {str(f['holder'])[:16]}  {f['address']:<22} {state}")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    with api_channel(args) as channel:
        taskworker_pb2_grpc.FileServiceStub(channel).Grant(taskworker_pb2.GrantRequest(
            file_id=args.ref, user_id=args.user or "", grantee=args.grantee,
            revoke=args.revoke, read=True), timeout=60)
    print(f"{'revoked' if args.revoke else 'granted'} {args.grantee} on {args.ref}")
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    from storage.keyring import Keyring
    from taskworker.api_token import (
        load_or_create_user_token,
        rotate_user_token,
        user_token_file,
    )

    ring = Keyring(args.data_dir)
    if args.user_command == "create":
        key = ring.create(args.name)
        load_or_create_user_token(args.data_dir, args.name)
        path = user_token_file(args.data_dir, args.name)
        if args.json:
            print_json({"name": args.name, "public_key": bytes(key.verify_key).hex(),
                        "token_file": str(path)})
        else:
            print(f"{args.name} {bytes(key.verify_key).hex()}")
            print(f"tw-mesh: {args.name}'s API token is in {path} (0600); it acts only as "
                  f"{args.name}. Hand it over with `tw-mesh user token {args.name}`",
                  file=sys.stderr)
        return 0
    if args.user_command == "token":
        ring.get(args.name)                     # NotFoundError (one line) if no such user
        rotate = args.rotate
        token = (rotate_user_token if rotate else load_or_create_user_token)(args.data_dir,
                                                                             args.name)
        path = user_token_file(args.data_dir, args.name)
        if args.json:
            print_json({"name": args.name, "token": token, "token_file": str(path),
                        "rotated": rotate})
        else:
            print(token)
            if rotate:
                print(f"tw-mesh: {args.name}'s old API token no longer works (new one in "
                      f"{path})", file=sys.stderr)
        return 0
    users = [{"name": n, "public_key": ring.public_key(n).hex(),
              "token": user_token_file(args.data_dir, n).exists()} for n in ring.names()]
    if args.json:
        print_json(users)
    else:
        for u in users:
            print(f"{u['name']:<24} {u['public_key']}{'' if u['token'] else '  (no token)'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands."""
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

    p = sub.add_parser("stat", help="show a file's fragments, holders and health")
    p.add_argument("ref", metavar="CID", help="a CID or file_id")
    p.add_argument("--user", help="keyring user (shows the filename if they can read it)")
    p.add_argument("--deep", action="store_true",
                   help="have holders re-hash every fragment (finds rot; reads everything)")
    add_api_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("share", help="let another user read a private file (or --revoke)",
                       description="Seal the file key to GRANTEE (a user of this node's "
                       "keyring or an Ed25519 public key in hex) in a new owner-signed "
                       "manifest. --revoke removes it for future reads; a key already read "
                       "cannot be taken back.",
                       epilog="example:\n  tw-mesh share bafkrei... bob",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="CID", help="a CID or file_id you own")
    p.add_argument("grantee", help="user name or public key hex")
    p.add_argument("--user", help="the owner (default: 'default', or the user whose token "
                   "you use)")
    p.add_argument("--revoke", action="store_true")
    add_api_flag(p)
    p.set_defaults(func=cmd_share)

    p = sub.add_parser("user", help="manage the node's local keyring of users and their tokens",
                       description="Users are Ed25519 keys in DATA_DIR/users/NAME.key (0600); "
                       "user_id in the API is the name. Each user also gets an API token, "
                       "DATA_DIR/users/NAME.token (0600): a call made with it acts only as that "
                       "user (an empty user_id means them; naming another user is refused) and "
                       "may use the file commands (put, get, stat, share, revise, log, grant, "
                       "sync) and status/peers, not leave, deploy or secrets. The node's own "
                       "token (DATA_DIR/api.token) stays the admin's: it acts as any user. "
                       "These commands read and write the data dir directly (run them as the "
                       "node's uid); a running node sees a new or rotated token on the next call.",
                       epilog="examples:\n"
                       "  tw-mesh user create alice --data-dir ./node1      # key and token\n"
                       "  tw-mesh user token alice --data-dir ./node1       # print alice's token\n"
                       "  tw-mesh user token alice --rotate --data-dir ./node1  # the old one stops\n"
                       "  tw-mesh user list --data-dir ./node1\n"
                       "alice then uses her token (and no --user):\n"
                       "  TW_MESH_API_TOKEN=$(cat alice.token) tw-mesh put notes.txt\n"
                       "  tw-mesh get CID --api-token-file alice.token -o notes.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    users = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    actions = {"create": "create a user: key and API token",
               "token": "print a user's API token (made if missing); --rotate replaces it",
               "list": "list users (name, public key; '(no token)' if none yet)"}
    for action, text in actions.items():
        q = users.add_parser(action, help=text, description=text[:1].upper() + text[1:] + ".")
        if action in ("create", "token"):
            q.add_argument("name")
        if action == "token":
            q.add_argument("--rotate", action="store_true",
                           help="make a new token; the old one stops working at once")
        q.add_argument("--data-dir", type=Path, default=Path(".tw-mesh"),
                       help="the node's data dir (default ./.tw-mesh)")
        add_json_flag(q)
        q.set_defaults(func=cmd_user)


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    """Add this capability's options to `tw-mesh join`."""
    parser.add_argument("--k", type=int, default=4, help="default data fragments per stripe (4)")
    parser.add_argument("--m", type=int, default=2, help="default parity fragments (2)")
    parser.add_argument("--stripe-mib", type=float, default=4.0,
                        help="default stripe size in MiB (4)")
    parser.add_argument("--reserved-space", metavar="SIZE", type=_size, default=None,
                        help="disk space this node keeps free on its data volume: it refuses "
                        "fragments and records that would eat into it, and peers place data "
                        "elsewhere (e.g. 0, 500M, 10G; default 1G, or a tenth of a volume "
                        "smaller than 10G)")
    parser.add_argument("--late-copy-delay", type=float, default=None, metavar="S",
                        help="advanced, for tests: delete a fragment copy that lands after a "
                        "Push gave its store up S seconds after the Push (default 60), retries "
                        "and giving up scaled with it (storage/late_copies.py)")


def collect_join_settings(args: argparse.Namespace, settings: dict[str, object]) -> None:
    """Copy this capability's join options into the node settings."""
    from storage.files import MAX_STRIPE, MIN_STRIPE

    stripe = int(args.stripe_mib * 2**20)
    if args.k < 1 or args.m < 0 or args.k + args.m > 255:
        raise CliError(f"need --k >= 1, --m >= 0 and k+m <= 255 (got k={args.k}, m={args.m})")
    if not MIN_STRIPE <= stripe <= MAX_STRIPE:
        raise CliError(f"--stripe-mib must be between {MIN_STRIPE / 2**20:g} and "
                       f"{MAX_STRIPE / 2**20:g}")
    settings["storage.k"] = args.k
    settings["storage.m"] = args.m
    settings["storage.stripe_size"] = stripe
    if args.reserved_space is not None:
        settings["storage.reserved_bytes"] = args.reserved_space
    if getattr(args, "late_copy_delay", None) is not None:
        if not args.late_copy_delay > 0:
            raise CliError("--late-copy-delay must be > 0")
        settings["storage.late_copy_delay"] = args.late_copy_delay


def _size(text: str) -> int:
    from storage.capacity import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
