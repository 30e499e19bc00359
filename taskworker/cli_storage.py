"""`tw-mesh` subcommands for storage: put, get (cli_transfer.py), stat, share, user
(cli_users.py); join flags --k, --m, --stripe-mib, --reserved-space, --late-copy-delay.
"""

from __future__ import annotations

import argparse

from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker import cli_transfer, cli_users
from taskworker.cli_common import CliError, add_api_flag, add_json_flag, api_channel, print_json


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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands."""
    cli_transfer.register(sub)

    p = sub.add_parser("stat", help="show a file's fragments, holders and health",
                       description="Ask the peers holding a file's fragments whether they still "
                       "have them (where repair moved one too). Health: healthy (every fragment "
                       "on its own peer), under-replicated (every fragment there, some on one "
                       "peer: the mesh has fewer than k+m storage peers), degraded (some lost, "
                       "still readable: repair rebuilds them), unrecoverable (fewer than k).",
                       epilog="example:\n  tw-mesh stat bafkrei... --deep")
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

    cli_users.register(sub)


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
