"""`tw-mesh` options for the monitor and self-healing (repair, scrub, drain).

`tw-mesh join --monitor --http 127.0.0.1:9100` makes the node a monitor: an ordinary peer that
polls every peer's status and serves /metrics and a status page on loopback. `tw-mesh status`
at a monitor's --api then prints the mesh view (its status carries a "monitor" section).
"""

from __future__ import annotations

import argparse

from taskworker.cli_common import CliError, parse_hostport

# Defaults from the durability study (simulations/figures/durability.md, "shipped" row:
# RS(4,2), repair at the first missing fragment, interval 300 s, grace 600 s, 10 MB/s).
REPAIR_INTERVAL_S = 300.0
REPAIR_GRACE_S = 600.0
REPAIR_RATE_BPS = 10e6
SCRUB_INTERVAL_S = 3600.0
AUDIT_RATE_BPS = 64 * 1024      # as storage/healing/audit.py


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands (none: `tw-mesh status` shows the mesh view)."""


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    """Add this capability's options to `tw-mesh join`."""
    g = parser.add_argument_group("monitor and self-healing")
    g.add_argument("--monitor", action="store_true",
                   help="also monitor the mesh: poll every peer's status, serve /metrics and "
                   "a status page on --http")
    g.add_argument("--http", metavar="HOST:PORT", type=parse_hostport, default=None,
                   help="monitor HTTP address (default 127.0.0.1:9100; port 0 picks one; "
                   "loopback only unless --monitor-allow-remote)")
    g.add_argument("--monitor-interval", type=float, default=5.0, metavar="S",
                   help="how often the monitor polls every peer, s (default 5)")
    g.add_argument("--monitor-allow-remote", action="store_true",
                   help="let --http listen on a non-loopback address (no auth!)")
    g.add_argument("--repair-interval", type=float, default=REPAIR_INTERVAL_S, metavar="S",
                   help="how often manifest holders check their files' fragments, s "
                   f"(default {REPAIR_INTERVAL_S:.0f})")
    g.add_argument("--repair-grace", type=float, default=REPAIR_GRACE_S, metavar="S",
                   help="how long a fragment may be unreachable before it is rebuilt, s "
                   f"(default {REPAIR_GRACE_S:.0f})")
    g.add_argument("--repair-rate", type=float, default=REPAIR_RATE_BPS, metavar="BYTES/S",
                   help=f"repair bandwidth cap, bytes/s (default {REPAIR_RATE_BPS:.0f})")
    g.add_argument("--audit-rate", type=float, default=AUDIT_RATE_BPS, metavar="BYTES/S",
                   help="how many bytes/s a repair leader fetches to check that holders keep "
                   f"what they report (default {AUDIT_RATE_BPS:.0f}; 0 disables)")
    g.add_argument("--scrub-interval", type=float, default=SCRUB_INTERVAL_S, metavar="S",
                   help="how often stored fragments are re-hashed, s "
                   f"(default {SCRUB_INTERVAL_S:.0f}; 0 disables)")
    g.add_argument("--drain", action="store_true",
                   help="on SIGTERM, hand this node's fragments to their next owners first")


def collect_join_settings(args: argparse.Namespace, settings: dict[str, object]) -> None:
    """Copy this capability's join options into the node settings."""
    if args.http is not None and not args.monitor:
        raise CliError("--http needs --monitor")
    settings["monitor"] = bool(args.monitor)
    if args.http is not None:
        host = args.http[0]
        if not (host in ("localhost", "::1") or host.startswith("127.")) \
                and not args.monitor_allow_remote:
            raise CliError(
                f"--http must be a loopback address, not {host} (or pass --monitor-allow-remote)")
        settings["monitor_http"] = args.http
    settings["monitor_interval"] = args.monitor_interval
    settings["monitor_allow_remote"] = bool(args.monitor_allow_remote)
    settings["repair_interval"] = args.repair_interval
    settings["repair_grace"] = args.repair_grace
    settings["repair_rate"] = args.repair_rate
    settings["audit_rate"] = args.audit_rate
    settings["scrub_interval"] = args.scrub_interval
    settings["drain_on_stop"] = bool(args.drain)
