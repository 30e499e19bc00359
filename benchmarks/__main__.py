"""Run the benchmarks behind the issues' goals, one after another, appending to RESULTS.md.

``python -m benchmarks`` (what ``make bench`` runs) runs the quick set: channel, storage (with
the codec table), versions and compute, each beside its anchor in the same run. Name benchmarks
to choose (``python -m benchmarks mesh repair``); ``--list`` shows them. Each one runs in its own
process, so one failing does not stop the rest; the exit status says whether all passed.
Run on a quiet machine: wall-clock ratios suffer when other work shares the cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

# name -> (module arguments that append to RESULTS.md, in the quick set?, what it measures)
BENCHMARKS: dict[str, tuple[list[str], bool, str]] = {
    "channel": ([], True, "sealed channel vs plaintext gRPC (#3)"),
    "storage": (["--write-results"], True, "Push/Get vs Tahoe-LAFS, codec vs zfec/pyeclib (#4)"),
    "versions": (["--write-results"], True, "Revise/Get-latest vs Tahoe MDMF (#5)"),
    "compute": (["--write"], True, "CallFunction vs plain gRPC (#6)"),
    "sandbox": ([], False, "sandbox pool calls/s, CPU and page faults per call (#6)"),
    "proxy": ([], False, "DNS/HTTP proxy vs direct aiodns/httpx (#7)"),
    "mesh": ([], False, "DHT lookups after killing 30%, vs stock kademlia (#2)"),
    "repair": (["--write-results"], False, "restore after losing one node (#8)"),
    "load": ([], False, "100 clients x 60 s mixed load on 6 nodes (#10)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: the quick set)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, quick, what) in BENCHMARKS.items():
            print(f"{name:10} {'quick' if quick else '     '}  {what}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (see --list)")
    names = args.names or [n for n, (_, quick, _w) in BENCHMARKS.items() if quick]
    failed: list[str] = []
    for name in names:
        extra, _quick, what = BENCHMARKS[name]
        print(f"== {name}: {what}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}_bench", *extra])
        print(f"== {name}: exit {code} after {time.monotonic() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
