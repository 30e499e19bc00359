"""`tw-mesh secret set|list|revoke`, `tw-mesh resolve`, and the proxy's `join` flags."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import sys

from taskworker.cli_common import (
    CliError,
    add_api_flag,
    add_json_flag,
    api_channel,
    parse_hostport,
    print_json,
)

RECORD_TYPES = ("A", "AAAA", "CAA", "CNAME", "MX", "NAPTR", "NS", "PTR", "SOA", "SRV", "TXT")


def _read_value() -> bytes:
    """The secret value: from stdin when it is not a terminal, else a hidden prompt. Never
    from argv (visible in ps and shell history)."""
    if sys.stdin is not None and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
    else:
        data = getpass.getpass("secret value: ").encode()
    if not data:
        raise CliError("empty secret value")
    return data


def cmd_secret_set(args: argparse.Namespace) -> int:
    from proto import proxy_pb2, proxy_pb2_grpc

    if not args.allowed:
        raise CliError("name at least one worker or function with --for")
    value = _read_value()
    with api_channel(args) as channel:
        reply = proxy_pb2_grpc.ProxyServiceStub(channel).SetSecret(
            proxy_pb2.SetSecretRequest(name=args.name, value=value, allowed=args.allowed,
                                       nodes=args.nodes), timeout=30)
    print(f"secret {args.name} set: version {reply.version}, sealed to {reply.recipients} "
          f"node(s), stored on {reply.stored}")
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    from proto import proxy_pb2, proxy_pb2_grpc

    with api_channel(args) as channel:
        reply = proxy_pb2_grpc.ProxyServiceStub(channel).ListSecrets(
            proxy_pb2.ListSecretsRequest(), timeout=10)
    rows = [{"name": s.name, "allowed": list(s.allowed), "version": s.version,
             "recipients": s.recipients, "revoked": s.revoked, "owner": s.owner}
            for s in reply.secrets]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("this node owns no secrets")
    for row in rows:
        state = "revoked" if row["revoked"] else f"sealed to {row['recipients']} node(s)"
        print(f"{row['name']:<24} v{row['version']}  {state}  for "
              f"{','.join(row['allowed']) or '-'}")  # type: ignore[arg-type]
    return 0


def cmd_secret_revoke(args: argparse.Namespace) -> int:
    from proto import proxy_pb2, proxy_pb2_grpc

    with api_channel(args) as channel:
        reply = proxy_pb2_grpc.ProxyServiceStub(channel).RevokeSecret(
            proxy_pb2.RevokeSecretRequest(name=args.name), timeout=30)
    print(f"secret {args.name} revoked (version {reply.version})")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from proto import taskworker_pb2, taskworker_pb2_grpc

    with api_channel(args) as channel:
        reply = taskworker_pb2_grpc.DNSServiceStub(channel).ResolveDomain(
            taskworker_pb2.DNSRequest(domain=args.domain, record_type=args.type), timeout=15)
    records = [{"type": r.type, "value": r.value, "ttl": r.ttl} for r in reply.records]
    if args.json:
        print_json({"records": records, "cached": reply.cached, "source": reply.source})
        return 0
    for r in records:
        print(f"{args.domain}\t{r['ttl']}\t{r['type']}\t{r['value']}")
    if not records:
        print(f"{args.domain}: no {args.type} records", file=sys.stderr)
    print(f";; source {reply.source}{' (cached)' if reply.cached else ''}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands."""
    p = sub.add_parser("secret", help="set, list or revoke secrets for deployed functions",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                       "  tw-mesh secret set api_key --for weather < key.txt\n"
                       "  tw-mesh secret set api_key --for weather --for billing/charge\n"
                       "  tw-mesh secret list\n  tw-mesh secret revoke api_key")
    ss = p.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    s = ss.add_parser("set", help="seal and store a secret (value from stdin or a prompt)",
                      description="Seal a secret to the mesh's compute nodes (or --node ones) "
                      "for the named workers/functions. The value is read from stdin, or "
                      "prompted for without echo; it is never taken from the command line. "
                      "Setting it again rotates it.")
    s.add_argument("name")
    s.add_argument("--for", dest="allowed", action="append", default=[],
                   metavar="WORKER_OR_FUNCTION",
                   help="worker id, function name or WORKER/FUNCTION allowed to read it; "
                   "NAME@NODE_ID also requires code deployed by that node (repeatable, at "
                   "least one)")
    s.add_argument("--node", dest="nodes", action="append", default=[], metavar="NODE_ID",
                   help="seal only to these nodes (hex id prefix, repeatable; default: every "
                   "compute node, re-sealed as new ones join)")
    add_api_flag(s)
    s.set_defaults(func=cmd_secret_set)
    s = ss.add_parser("list", help="secrets this node owns (names and readers, never values)")
    add_api_flag(s)
    add_json_flag(s)
    s.set_defaults(func=cmd_secret_list)
    s = ss.add_parser("revoke", help="revoke a secret this node owns")
    s.add_argument("name")
    add_api_flag(s)
    s.set_defaults(func=cmd_secret_revoke)

    p = sub.add_parser("resolve", help="resolve a name through the node (DNSService)",
                       epilog="examples:\n  tw-mesh resolve example.com --type AAAA\n"
                       "  tw-mesh resolve 1a2b3c4d.node.mesh\n  tw-mesh resolve hello.fn.mesh",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("domain")
    p.add_argument("--type", default="A", type=str.upper, choices=RECORD_TYPES)
    add_api_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_resolve)


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address or network: {text!r}") from None


def _http_allow(text: str) -> str:
    principal, sep, hosts = text.partition("=")
    if not sep or not principal.strip() or not hosts.strip():
        raise argparse.ArgumentTypeError(f"expected WORKER=HOST[,HOST...], got {text!r}")
    return text


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    """Add this capability's options to `tw-mesh join`."""
    g = parser.add_argument_group("proxy (DNS, outbound HTTP, secrets for functions)")
    g.add_argument("--resolver", metavar="HOST:PORT", type=parse_hostport, action="append",
                   default=[], help="upstream DNS server (repeatable; default: the system's)")
    g.add_argument("--dns-allow", metavar="SUFFIX", action="append", default=[],
                   help="only these names (and subdomains) may be resolved (repeatable)")
    g.add_argument("--dns-deny", metavar="SUFFIX", action="append", default=[],
                   help="never resolve these names (and subdomains) (repeatable)")
    g.add_argument("--dns-negative-ttl", type=float, default=30.0,
                   help="seconds to cache NXDOMAIN / no-data answers (default 30)")
    g.add_argument("--http-allow", metavar="WORKER=HOST[,HOST]", type=_http_allow,
                   action="append", default=[],
                   help="hosts a worker/function ('*' = any) may call; *.example.com for "
                   "subdomains (repeatable)")
    g.add_argument("--allow-network", metavar="CIDR", type=_cidr, action="append", default=[],
                   help="let the proxy connect to this loopback/private network (repeatable; "
                   "refused by default)")
    g.add_argument("--http-max-bytes", type=int, default=2**20,
                   help="largest response handed to a function (default 1 MiB)")
    g.add_argument("--http-timeout", type=float, default=10.0,
                   help="longest external call, redirects included, s (default 10)")
    g.add_argument("--secret-owner", metavar="NODE_ID", action="append", default=[],
                   help="accept secrets only from these owner nodes (hex id prefix, "
                   "repeatable; default: any mesh member; this node always)")
    g.add_argument("--proxy-via-peers", action="store_true",
                   help="send this node's DNS and HTTP out through peers (no local egress)")
    g.add_argument("--no-proxy-for-peers", action="store_true",
                   help="refuse to resolve or fetch on behalf of peers")


def collect_join_settings(args: argparse.Namespace, settings: dict[str, object]) -> None:
    """Copy this capability's join options into the node settings."""
    settings["proxy_resolvers"] = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                                   for h, p in args.resolver]
    settings["proxy_dns_allow"] = list(args.dns_allow)
    settings["proxy_dns_deny"] = list(args.dns_deny)
    settings["proxy_negative_ttl"] = args.dns_negative_ttl
    settings["proxy_http_allow"] = list(args.http_allow)
    settings["proxy_allow_networks"] = list(args.allow_network)
    settings["proxy_max_bytes"] = args.http_max_bytes
    settings["proxy_max_timeout"] = args.http_timeout
    settings["proxy_via_peers"] = args.proxy_via_peers
    settings["proxy_secret_owners"] = list(args.secret_owner)
    settings["proxy_no_serve_peers"] = args.no_proxy_for_peers
