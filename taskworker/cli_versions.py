"""`tw-mesh` subcommands for versions: revise, sync, log, grant; the --sync-interval join flag."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from taskworker.cli_common import (
    CliError,
    add_api_flag,
    add_json_flag,
    api_channel,
    print_json,
)


def _user_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default="", help="keyring user on the node (default: default, "
                   "or the user whose token you use)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands."""
    r = sub.add_parser(
        "revise", help="store FILE as a new version of FILE_ID",
        description="Store FILE as a new version of the document FILE_ID (from `tw-mesh put`). "
        "The new version's vector dominates its base: by default the current single head; "
        "when heads conflict, name them with --base (naming every head merges the conflict). "
        "Only the owner and writers it granted may revise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  tw-mesh revise f0123... notes.txt\n"
        "  tw-mesh revise f0123... merged.txt --base 9ab1... --base 47cd...")
    r.add_argument("file_id")
    r.add_argument("file", type=Path, help="the new content ('-' reads stdin)")
    r.add_argument("--base", action="append", default=[], metavar="VERSION",
                   help="version id to build on (repeatable; default: the single head)")
    _user_flag(r)
    add_api_flag(r)
    add_json_flag(r)
    r.set_defaults(func=cmd_revise)

    s = sub.add_parser(
        "sync", help="reconcile FILE_ID's replicas now and show its heads",
        description="Exchange version records with every replica of FILE_ID, verify every "
        "signature, keep the union, and print the heads (two or more = a conflict).")
    s.add_argument("file_id")
    _user_flag(s)
    add_api_flag(s)
    add_json_flag(s)
    s.set_defaults(func=cmd_sync)

    lg = sub.add_parser(
        "log", help="history of FILE_ID: versions, vectors, writers, conflicts",
        description="Every version of FILE_ID, oldest first, with its vector and writer; "
        "heads are marked, and two or more heads are reported as a conflict.")
    lg.add_argument("file_id")
    _user_flag(lg)
    add_api_flag(lg)
    add_json_flag(lg)
    lg.set_defaults(func=cmd_log)

    if "grant" in sub.choices:
        return      # another capability took the name (read access is `tw-mesh share`)
    g = sub.add_parser(
        "grant", help="let USER write FILE_ID (or --revoke it)",
        description="Owner only: sign a grant letting USER (a keyring name on this node or an "
        "Ed25519 public key in hex) revise FILE_ID; --revoke withdraws it (versions the owner "
        "has already seen stay valid; later ones by USER are refused).")
    g.add_argument("file_id")
    g.add_argument("grantee", metavar="USER")
    g.add_argument("--revoke", action="store_true")
    _user_flag(g)
    add_api_flag(g)
    g.set_defaults(func=cmd_grant)


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    """Add this capability's options to `tw-mesh join`."""
    parser.add_argument("--sync-interval", type=float, default=None, metavar="S",
                        help="background anti-entropy of version records every S seconds "
                        "(default 30; 0 disables)")
    parser.add_argument("--versions-replicas", type=int, default=None, metavar="R",
                        help="peers holding each file's version records (default m+1)")


def collect_join_settings(args: argparse.Namespace, settings: dict[str, object]) -> None:
    """Copy this capability's join options into the node settings."""
    if getattr(args, "sync_interval", None) is not None:
        if args.sync_interval < 0:
            raise CliError("--sync-interval must be >= 0")
        settings["versions.sync_interval"] = args.sync_interval
    if getattr(args, "versions_replicas", None) is not None:
        if args.versions_replicas < 1:
            raise CliError("--versions-replicas must be >= 1")
        settings["versions.replicas"] = args.versions_replicas


def _stub(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from proto import taskworker_pb2_grpc
    channel = api_channel(args)
    return channel, taskworker_pb2_grpc.FileServiceStub(channel)


def _short(h: str) -> str:
    return h[:16]


def _head_dict(h: object) -> dict[str, object]:
    from proto import taskworker_pb2
    assert isinstance(h, taskworker_pb2.VersionHead)
    return {"version": h.version, "cid": h.cid, "writer": h.writer, "time": h.time,
            "vector": dict(sorted(h.vector.items()))}


def _vector_text(vector: dict[str, int]) -> str:
    return "{" + ", ".join(f"{w[:8]}:{c}" for w, c in sorted(vector.items())) + "}"


def cmd_revise(args: argparse.Namespace) -> int:
    from proto import taskworker_pb2
    data = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    channel, stub = _stub(args)
    with channel:
        resp = stub.Revise(taskworker_pb2.ReviseRequest(
            file_id=args.file_id, file_data=data, user_id=args.user,
            base_versions=args.base), timeout=300)
    if args.json:
        print_json({"version": resp.version, "cid": resp.cid, "vector": dict(resp.vector)})
    else:
        print(f"version {resp.version}\ncid     {resp.cid}\nvector  "
              f"{_vector_text(dict(resp.vector))}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from proto import taskworker_pb2
    channel, stub = _stub(args)
    with channel:
        resp = stub.Synchronous(taskworker_pb2.SynchronousRequest(
            file_id=args.file_id, user_id=args.user), timeout=120)
    if args.json:
        print_json({"heads": [_head_dict(h) for h in resp.heads], "records": resp.records,
                    "replicas_reached": resp.replicas_reached, "conflict": resp.conflict})
        return 0
    print(f"{resp.records} version(s); {resp.replicas_reached} replica(s) reached")
    if resp.conflict:
        print(f"CONFLICT: {len(resp.heads)} heads (merge with `tw-mesh revise {args.file_id} "
              "FILE --base V1 --base V2 ...`)")
    for h in resp.heads:
        print(f"head {h.version}  {h.cid}  {_vector_text(dict(h.vector))}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from proto import taskworker_pb2
    channel, stub = _stub(args)
    with channel:
        resp = stub.Log(taskworker_pb2.LogRequest(file_id=args.file_id, user_id=args.user),
                        timeout=120)
    heads = list(resp.heads)
    # one writer signing two versions at the same counter (equivocation): both are kept
    slots: dict[tuple[str, int], list[str]] = {}
    for v in resp.versions:
        slots.setdefault((v.writer, v.vector.get(v.writer, 0)), []).append(v.version)
    doubled = [(w, c, ids) for (w, c), ids in sorted(slots.items()) if len(ids) > 1]
    equivocations = [{"writer": w, "counter": c, "versions": ids} for w, c, ids in doubled]
    if args.json:
        print_json({"versions": [_head_dict(v) for v in resp.versions], "heads": heads,
                    "conflict": len(heads) > 1, "equivocations": equivocations})
        return 0
    for v in resp.versions:
        when = datetime.datetime.fromtimestamp(v.time, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if v.version in heads else " "
        print(f"{mark} {_short(v.version)}  {when}  writer {_short(v.writer)}  "
              f"{_vector_text(dict(v.vector))}  {v.cid}")
    if len(heads) > 1:
        print(f"CONFLICT: {len(heads)} heads: " + ", ".join(_short(h) for h in heads))
    for w, c, ids in doubled:
        print(f"EQUIVOCATION: writer {_short(w)} signed {len(ids)} versions at counter {c}")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    from proto import taskworker_pb2
    channel, stub = _stub(args)
    with channel:
        stub.Grant(taskworker_pb2.GrantRequest(file_id=args.file_id, user_id=args.user,
                                               grantee=args.grantee, revoke=args.revoke),
                   timeout=120)
    print(f"{'revoked' if args.revoke else 'granted'} {args.grantee} on {args.file_id}")
    return 0
