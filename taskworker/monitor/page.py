"""The HTML status page: peers and health, per-file redundancy, charts over time.

Server-side only: the charts are inline SVG built from the poller's ring buffer, the page
refreshes itself with a meta tag, and nothing is fetched from elsewhere (no JS, no CDN). Every
peer-supplied string goes through ``html.escape``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from taskworker.monitor.peer_state import Sample
from taskworker.monitor.poller import MeshPoller

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.l,th.l{text-align:left}
.up{color:#070}.down{color:#b00;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}figcaption{font-weight:bold}
.big{font-size:1.4em}
"""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def svg_chart(samples: Sequence[Sample], value: Callable[[Sample], float], *,
              fmt: Callable[[float], str] = lambda v: f"{v:.2f}", width: int = 420,
              height: int = 140) -> str:
    """A line chart of ``value`` over time, as an inline <svg>."""
    pad_l, pad_r, pad_t, pad_b = 60, 10, 10, 20
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="#fafafa" '
             'stroke="#ccc"/>']
    if samples:
        ys = [value(s) for s in samples]
        t0, t1 = samples[0].t, samples[-1].t
        top = max(ys) or 1.0
        span = (t1 - t0) or 1.0
        points = " ".join(
            f"{pad_l + (s.t - t0) / span * w:.1f},{pad_t + h - y / top * h:.1f}"
            for s, y in zip(samples, ys, strict=True))
        parts.append(f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" '
                     f'points="{points}"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="10" '
                     f'text-anchor="end">{escape(fmt(top))}</text>')
        parts.append(f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="10" '
                     'text-anchor="end">0</text>')
        parts.append(f'<text x="{pad_l}" y="{height - 4}" font-size="10">'
                     f'-{span:.0f} s</text>')
        parts.append(f'<text x="{pad_l + w}" y="{height - 4}" font-size="10" '
                     f'text-anchor="end">now ({escape(fmt(ys[-1]))})</text>')
    else:
        parts.append(f'<text x="{pad_l + 10}" y="{pad_t + 20}" font-size="12">no samples yet'
                     '</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def render_page(poller: MeshPoller, *, title: str, refresh: int = 5) -> str:
    summary = poller.summary()
    rows = []
    for p in summary["peers"]:
        state = '<span class="up">up</span>' if p["up"] else '<span class="down">down</span>'
        if p["up"] and p.get("suspected_by"):      # answers Status, but its stores hang
            state = (f'<span class="down">up, stores hang (suspected by '
                     f'{int(p["suspected_by"])})</span>')
        elif p["up"] and p.get("storage_full"):     # takes no new data (--reserved-space)
            state = '<span class="down">up, storage full (under 64 MiB usable)</span>'
        pool = p["sandbox"]
        rows.append(
            "<tr>" + _cell(p["node_id"][:16], "l") + _cell(p["address"], "l")
            + f"<td>{state}</td>" + _cell(",".join(p["roles"]), "l")
            + _cell(f"{p['uptime_s']:.0f} s") + _cell(human_bytes(p["disk_used_bytes"]))
            + _cell(human_bytes(p["disk_free_bytes"])) + _cell(p["fragments"])
            + _cell(human_bytes(p["stored_bytes"])) + _cell(f"{p['calls_per_s']:.2f}")
            + _cell(f"{p['p99_latency_s'] * 1000:.1f} ms" if p["p99_latency_s"] is not None
                    else "-")
            + _cell(f"{p['status_rtt_p99_s'] * 1000:.1f} ms")
            + _cell(f"{pool.get('idle', 0):.0f}/{pool.get('size', 0):.0f}" if pool else "-")
            + _cell(p["errors"]) + _cell(p["error"], "l") + "</tr>")
    files = summary["files_under_replicated"]
    file_rows = "".join(
        "<tr>" + _cell(f.get("cid", ""), "l") + _cell(f.get("healthy", "?"))
        + _cell(f.get("want", "?")) + _cell(f.get("missing_since", "")) + "</tr>"
        for f in files)
    history = list(poller.history)
    charts = "".join(
        f"<figure><figcaption>{escape(name)}</figcaption>{svg_chart(history, fn, fmt=fmt)}"
        "</figure>"
        for name, fn, fmt in (
            ("calls/s", lambda s: s.calls_per_s, lambda v: f"{v:.1f}"),
            ("stored bytes", lambda s: s.stored_bytes, human_bytes),
            ("fragments", lambda s: s.fragments, lambda v: f"{v:.0f}"),
            ("live peers", lambda s: float(s.peers_up), lambda v: f"{v:.0f}"),
        ))
    redundancy = (f"<p><b>{len(files)}</b> file(s) below k+m healthy fragments.</p>"
                  if files else "<p>All files reported by manifest holders are at full "
                  "redundancy.</p>")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(summary["last_round"] or 0))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{int(refresh)}">
<title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="big">Live peers: <span id="live-peers">{summary["peers_up"]}</span>
 of <span id="known-peers">{summary["peers_known"]}</span> known ·
 fragments <span id="fragments-total">{summary["fragments_total"]}</span> ·
 stored {escape(human_bytes(summary["stored_bytes_total"]))} ·
 {summary["calls_per_s"]:.2f} calls/s · errors {summary["errors_total"]}</p>
<p>Last poll {escape(stamp)} (round {summary["rounds"]}).</p>
<h2>Peers</h2>
<table id="peers"><tr><th class="l">node</th><th class="l">address</th><th>health</th>
<th class="l">roles</th><th>uptime</th><th>disk used</th><th>disk free</th><th>fragments</th>
<th>stored</th><th>calls/s</th><th>p99 call</th><th>p99 status RTT</th><th>sandbox idle/size</th>
<th>errors</th><th class="l">last error</th></tr>
{"".join(rows)}
</table>
<h2>Redundancy</h2>
{redundancy}
<table id="files"><tr><th class="l">file</th><th>healthy</th><th>want</th>
<th>missing since</th></tr>{file_rows}</table>
<h2>Over time</h2>
<div class="charts">{charts}</div>
</body></html>
"""
