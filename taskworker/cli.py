"""`tw-mesh`: run a node and talk to it. Every subcommand has --help with examples."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker import cli_compute, cli_monitor, cli_proxy, cli_storage, cli_versions
from taskworker.cli_common import (
    add_api_flag,
    add_json_flag,
    api_channel,
    parse_hostport,
    parse_port,
    print_json,
    run_guarded,
)

CAPABILITIES = (cli_storage, cli_versions, cli_compute, cli_proxy, cli_monitor)

EPILOG = """\
examples:
  tw-mesh join                                   start a new mesh (API on 127.0.0.1:50052)
  tw-mesh join --bootstrap 127.0.0.1:50051 --listen 127.0.0.1:50061 \\
               --api 127.0.0.1:50062 --data-dir ./node2     join it from a second node
  tw-mesh peers --api 127.0.0.1:50062            list the peers that node sees
  tw-mesh put report.pdf                         store a file, print its CID
  tw-mesh get bafkrei... -o copy.pdf             fetch it back
  tw-mesh call hello --args '["world"]'          call a function through any node

The local API needs the node's bearer token (DATA_DIR/api.token). tw-mesh finds it: from
--api-token-file FILE, else $TW_MESH_API_TOKEN, else the copy a running node leaves for its
user in $XDG_RUNTIME_DIR/tw-mesh/api-PORT.token (or ~/.tw-mesh/run/; $TW_MESH_RUNTIME_DIR
overrides the directory). Other clients send it as 'authorization: Bearer TOKEN'.
"""


def _mesh_name(text: str) -> str:
    from mesh.dht import check_mesh_name
    try:
        return check_mesh_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _join_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("join", help="run a node in the foreground (alone it starts a new mesh)",
                       description="Run a node in the foreground. Without --bootstrap it starts "
                       "a new mesh; with one or more --bootstrap addresses it joins theirs. "
                       "Stop it with Ctrl-C (SIGINT) or SIGTERM.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  tw-mesh join --bootstrap 10.0.0.5:50051 "
                       "--listen 0.0.0.0:50051 --data-dir /var/lib/tw-mesh")
    p.add_argument("--bootstrap", metavar="HOST:PORT", type=parse_hostport, action="append",
                   default=[], help="peer address of any mesh node (repeatable)")
    p.add_argument("--listen", metavar="HOST:PORT", type=parse_hostport,
                   default=("127.0.0.1", 50051),
                   help="peer address: DHT over UDP and peer gRPC over TCP (default "
                   "127.0.0.1:50051; port 0 picks a free one)")
    p.add_argument("--channel-port", metavar="PORT", type=parse_port, default=0,
                   help="TCP port of the sealed peer channel on the --listen host (default 0: "
                   "any free port; peers learn it from this node's signed peer record, so fix "
                   "it only for a firewall)")
    p.add_argument("--no-tcp-channel", action="store_true",
                   help="serve the sealed peer channel over the peer gRPC port only (slower: "
                   "~0.5 ms against ~0.16 ms per small call here)")
    p.add_argument("--api", metavar="HOST:PORT", type=parse_hostport,
                   default=("127.0.0.1", 50052), help="local API address (default 127.0.0.1:50052)")
    p.add_argument("--data-dir", type=Path, default=Path(".tw-mesh"),
                   help="where the node keeps its key, fragments and records (default ./.tw-mesh)")
    p.add_argument("--role", dest="roles", action="append", choices=["storage", "compute"],
                   help="capabilities this node offers (default: both)")
    p.add_argument("--rpc-timeout", type=float, default=1.0, help="DHT RPC timeout, s (default 1)")
    p.add_argument("--sweep-interval", type=float, default=2.0,
                   help="how often to check peers' liveness, s (default 2)")
    p.add_argument("--mesh", metavar="NAME", type=_mesh_name, default="default",
                   help="name of the mesh to start or join (default 'default'): peers of a mesh "
                   "with another name are refused, so two meshes on one network never merge")
    p.add_argument("--allow-remote-api", action="store_true",
                   help="let --api listen on a non-loopback address (calls still need the API "
                   "token, which travels in cleartext: use it only on a trusted network)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    for capability in CAPABILITIES:
        capability.add_join_flags(p)
    p.set_defaults(func=cmd_join)


def cmd_join(args: argparse.Namespace) -> int:
    from taskworker.node import NodeConfig

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    for noisy in ("kademlia", "rpcudp", "mesh.dht"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings: dict[str, object] = {}
    for capability in CAPABILITIES:
        capability.collect_join_settings(args, settings)
    config = NodeConfig(data_dir=args.data_dir, listen=args.listen, api=args.api,
                        bootstrap=args.bootstrap, roles=tuple(args.roles or ("storage", "compute")),
                        rpc_timeout=args.rpc_timeout, sweep_interval=args.sweep_interval,
                        allow_remote_api=args.allow_remote_api, settings=settings,
                        mesh=args.mesh, tcp_channel=not args.no_tcp_channel,
                        channel_port=args.channel_port)
    return asyncio.run(_run_node(config))


async def _run_node(config: object) -> int:
    from taskworker.node import Node, NodeConfig

    assert isinstance(config, NodeConfig)
    node = Node(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.shutdown.set)
    try:
        await node.start()
        await node.shutdown.wait()
        logging.getLogger("tw-mesh").info("shutting down")
    finally:
        await node.stop()
    return 0


def _peers_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("peers", help="list the peers a node sees",
                       description="List the live peers of the node at --api: node ID, "
                       "address, last seen, roles.")
    add_api_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_peers)


def cmd_peers(args: argparse.Namespace) -> int:
    with api_channel(args) as channel:
        resp = taskworker_pb2_grpc.NodeServiceStub(channel).Peers(
            taskworker_pb2.PeersRequest(), timeout=10)
    peers = [{"node_id": p.node_id, "address": p.address, "last_seen": p.last_seen,
              "roles": list(p.roles)} for p in resp.peers]
    if args.json:
        print_json({"self": resp.self_id, "peers": peers})
        return 0
    print(f"node {resp.self_id} sees {len(peers)} peer(s)")
    now = time.time()
    for p in peers:
        ago = f"{now - float(str(p['last_seen'])):.0f}s ago"
        print(f"  {p['node_id']}  {p['address']:<22} {ago:>9}  {','.join(p['roles'])}")  # type: ignore[arg-type]
    return 0


def _status_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show a node's status (or the mesh's, at a monitor)")
    add_api_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    with api_channel(args) as channel:
        resp = taskworker_pb2_grpc.NodeServiceStub(channel).Status(
            taskworker_pb2.StatusRequest(), timeout=10)
    status = json.loads(resp.json)
    if args.json:
        print_json(status)
        return 0
    print(f"node {status['node_id']}  peer address {status['address']}  api {status['api']}")
    print(f"  uptime {status['uptime_s']}s, {status['peers']} live peer(s), "
          f"roles {','.join(status['roles'])}")
    channel = status.get("channel", {})
    print(f"  channel: TCP port {status.get('channel_port') or 'off (gRPC only)'}, "
          + ", ".join(f"{k}={v}" for k, v in sorted(channel.items())))
    refused = status.get("api_auth", {}).get("refused", {})
    if refused:
        print("  local API refused (no or a wrong token): "
              + ", ".join(f"{k}={v}" for k, v in refused.items()))
    for name, doc in sorted(status.get("services", {}).items()):
        print(f"  {name}: " + ", ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in sorted(doc.items())
            if not isinstance(v, dict) and not (isinstance(v, list) and not v)))
    return 0


def _leave_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("leave", help="ask a node to leave the mesh (hand off its data first)")
    add_api_flag(p)
    p.add_argument("--no-drain", action="store_true", help="exit without handing off fragments")
    p.set_defaults(func=cmd_leave)


def cmd_leave(args: argparse.Namespace) -> int:
    with api_channel(args) as channel:
        resp = taskworker_pb2_grpc.NodeServiceStub(channel).Leave(
            taskworker_pb2.LeaveRequest(drain=not args.no_drain), timeout=600)
    print(f"node is leaving; {resp.fragments_moved} fragment(s) handed off")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tw-mesh", description="TaskWorker mesh: peer-to-peer storage and sandboxed compute.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _join_parser(sub)
    _peers_parser(sub)
    _status_parser(sub)
    _leave_parser(sub)
    sub.add_parser("sandbox", add_help=False,
                   help="run a function locally in the sandbox remote calls use "
                   "(tw-mesh sandbox --help)")
    for capability in CAPABILITIES:
        capability.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:
        from compute.sandbox.cli import run_command

        return run_command(argv[1:])
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
