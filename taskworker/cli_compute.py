"""`tw-mesh` subcommands for compute: call, deploy, functions; compute join flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from taskworker.cli_common import (
    CliError,
    add_api_flag,
    add_json_flag,
    api_channel,
    describe_rpc_error,
    print_json,
    run_guarded,
)

EXIT_CALL_FAILED = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands."""
    p = sub.add_parser(
        "call", help="call a function through a node (any node: it finds a provider)",
        description="Call FUNCTION through the node at --api, which finds a provider in the "
        "mesh, forwards the call and retries elsewhere if the provider fails. Prints the "
        "JSON result; on failure one error line (with the user's exception type and "
        "message) and exit status 1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  tw-mesh call hello\n  tw-mesh call add --args '[1, 2]'\n"
        "  tw-mesh call process_data --kwargs '{\"data\": [1, 2]}' --json")
    p.add_argument("function")
    p.add_argument("--args", default="[]", help="JSON list of positional arguments "
                   "(a JSON object is taken as keywords)")
    p.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="deadline in seconds, retries included (default 30)")
    p.add_argument("--traceback", action="store_true",
                   help="on a user exception, print its traceback to stderr too")
    add_api_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_call)

    d = sub.add_parser(
        "deploy", help="store a module's code in the mesh and publish its functions",
        description="Store MODULE.py in the mesh by CID (replicated on the peers closest to "
        "it) and publish its functions, which any compute node can then load into its "
        "sandbox and serve, even after this node is gone. Deploying again (new code, new "
        "CID) takes effect for new calls. Without --name, every function the module "
        "registers with @worker.function / register_function (or, if none, every public "
        "top-level def) is published. A deployed name belongs to this node's key from its "
        "first deploy: a deploy of a name another key owns is refused (PERMISSION_DENIED); "
        "see `tw-mesh name`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  tw-mesh deploy examples/seed_basic.py\n"
        "  tw-mesh deploy stats.py --name mean --name median")
    d.add_argument("module", type=Path)
    d.add_argument("--name", action="append", default=[],
                   help="publish only this function (repeatable)")
    d.add_argument("--worker-id", default="deployed",
                   help="worker id the functions run as (secrets policy; default 'deployed')")
    add_api_flag(d)
    add_json_flag(d)
    d.set_defaults(func=cmd_deploy)

    n = sub.add_parser(
        "name", help="show who owns a deployed function name; release or transfer yours",
        description="Show the owner of FUNCTION's name (the key that first deployed it). "
        "The owner may release it (anyone may then claim it by deploying) or transfer it to "
        "another node (by node id; the node must be a live peer).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  tw-mesh name price\n  tw-mesh name price --release\n"
        "  tw-mesh name price --transfer 3f2a...(40 hex digits)")
    n.add_argument("function")
    action = n.add_mutually_exclusive_group()
    action.add_argument("--release", action="store_true", help="give the name up")
    action.add_argument("--transfer", metavar="NODE_ID", help="hand the name to this node")
    add_api_flag(n)
    add_json_flag(n)
    n.set_defaults(func=cmd_name)

    f = sub.add_parser("functions", help="list the providers of a function",
                       description="List the signed provider records of FUNCTION in the DHT.")
    f.add_argument("function")
    add_api_flag(f)
    add_json_flag(f)
    f.set_defaults(func=cmd_functions)


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    """Add this capability's options to `tw-mesh join`."""
    parser.add_argument("--sandbox-workers", type=int, default=4, metavar="N",
                        help="sandbox workers kept pre-forked (default 4)")
    parser.add_argument("--provider-refresh", type=float, default=10.0, metavar="S",
                        help="how often provider records are republished with the load, s")


def collect_join_settings(args: argparse.Namespace, settings: dict[str, object]) -> None:
    """Copy this capability's join options into the node settings."""
    if args.sandbox_workers < 1:
        raise SystemExit("tw-mesh join: error: --sandbox-workers must be at least 1")
    settings["compute_pool_size"] = args.sandbox_workers
    settings["compute_refresh_s"] = args.provider_refresh


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None


def cmd_call(args: argparse.Namespace) -> int:
    from compute import values
    from proto import taskworker_pb2, taskworker_pb2_grpc

    pos = _json_arg(args.args, "--args")
    kw = _json_arg(args.kwargs, "--kwargs")
    if isinstance(pos, dict) and isinstance(kw, dict):
        kw = {**pos, **kw}
        pos = []
    if not isinstance(pos, list):
        raise CliError("--args must be a JSON list (or an object of keywords)")
    if not isinstance(kw, dict):
        raise CliError("--kwargs must be a JSON object")
    try:
        request = taskworker_pb2.FunctionCallRequest(
            function_name=args.function, args=values.to_list(pos), kwargs=values.to_struct(kw),
            timeout=args.timeout)
    except values.WireValueError as exc:
        raise CliError(str(exc)) from None
    with api_channel(args) as channel:
        stub = taskworker_pb2_grpc.RPCServiceStub(channel)
        try:
            resp = stub.CallFunction(request, timeout=args.timeout + 5)
        except grpc.RpcError as exc:
            print(f"tw-mesh: error: {_describe_call_error(exc, args)}", file=sys.stderr)
            return EXIT_CALL_FAILED
    result = values.from_value(resp.result)
    if args.json:
        print_json({"result": result, "worker_id": resp.worker_id, "node_id": resp.node_id,
                    "attempts": resp.attempts})
    else:
        print(json.dumps(result))
    return 0


def _describe_call_error(exc: grpc.RpcError, args: argparse.Namespace) -> str:
    from proto import taskworker_pb2

    if not isinstance(exc, grpc.Call):
        return str(exc)
    meta = {m.key: m.value for m in exc.trailing_metadata() or ()}
    code = exc.code()
    where = ""
    if "tw-worker-id" in meta or "tw-node-id" in meta:
        node = str(meta.get("tw-node-id", ""))[:16]
        where = f", worker {meta.get('tw-worker-id', '?')} on node {node}"
    attempts = f", {meta['tw-attempts']} attempt(s)" if meta.get("tw-attempts") else ""
    raw = meta.get("tw-user-error-bin")
    if isinstance(raw, bytes):
        err = taskworker_pb2.UserError()
        err.ParseFromString(raw)
        if args.traceback and err.traceback:
            print(err.traceback.rstrip(), file=sys.stderr)
        first = err.message.splitlines()[0] if err.message else ""
        return f"{err.type}: {first} (raised by the function{where}{attempts})"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED) and not meta:
        return describe_rpc_error(exc, args)
    details = (exc.details() or "").splitlines()
    return f"{details[0] if details else code.name} ({code.name}{where}{attempts})"


def cmd_deploy(args: argparse.Namespace) -> int:
    from proto import compute_pb2, compute_pb2_grpc

    try:
        source = args.module.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.module}: {exc.strerror}") from None
    with api_channel(args) as channel:
        resp = compute_pb2_grpc.ComputeServiceStub(channel).Deploy(
            compute_pb2.DeployRequest(source=source, filename=args.module.name,
                                      names=args.name, worker_id=args.worker_id), timeout=60)
    names = [f.name for f in resp.functions]
    if args.json:
        print_json({"cid": resp.cid, "deploy_seq": resp.deploy_seq, "functions": names,
                    "code_replicas": resp.code_replicas, "record_acks": resp.record_acks})
    else:
        print(f"deployed {args.module.name} as {resp.cid}: {', '.join(names)} "
              f"(code on {resp.code_replicas} node(s))")
    return 0


def cmd_name(args: argparse.Namespace) -> int:
    from proto import compute_pb2, compute_pb2_grpc

    request = compute_pb2.NameRequest(function=args.function, action="show")
    if args.release:
        request.action = "release"
    elif args.transfer:
        try:
            request.to_node_id = bytes.fromhex(args.transfer)
        except ValueError:
            raise CliError(f"--transfer takes a node id in hex, not {args.transfer!r}") from None
        request.action = "transfer"
    with api_channel(args) as channel:
        resp = compute_pb2_grpc.ComputeServiceStub(channel).Name(request, timeout=30)
    if args.json:
        print_json({"function": resp.function, "owner_id": resp.owner_id,
                    "claimed_ms": resp.claimed_ms, "mine": resp.mine})
    elif not resp.owner_id:
        print(f"{resp.function!r} is not owned by anyone")
    else:
        whose = " (this node)" if resp.mine else ""
        print(f"{resp.function!r} is owned by node {resp.owner_id}{whose}")
    return 0


def cmd_functions(args: argparse.Namespace) -> int:
    from proto import compute_pb2, compute_pb2_grpc

    with api_channel(args) as channel:
        resp = compute_pb2_grpc.ComputeServiceStub(channel).Functions(
            compute_pb2.FunctionsRequest(function=args.function), timeout=30)
    rows = [{"worker_id": p.worker_id, "node_id": p.node_id, "address": p.address,
             "load": p.load, "code_cid": p.code_cid, "deploy_seq": p.deploy_seq,
             "alive": p.alive} for p in resp.providers]
    if args.json:
        print_json({"function": args.function, "providers": rows})
        return 0
    if not rows:
        print(f"no provider offers {args.function!r}")
    for r in rows:
        what = f"deployed {str(r['code_cid'])[:20]}…" if r["code_cid"] else "local"
        print(f"  {str(r['node_id'])[:16]}  {r['address']:<22} {r['worker_id']:<16} "
              f"load={r['load']} {what} {'alive' if r['alive'] else 'gone'}")
    return 0


__all__ = ["collect_join_settings", "register", "add_join_flags", "run_guarded"]
