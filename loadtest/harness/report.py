"""What a run leaves in `--out DIR`: `results.json` (every record, the machine, the
commit, the command), `results.md` (tables with ratios and the load average beside every
figure) and SVG plots."""

import json
import math
import os
import statistics

from . import svg
from .closed import fmt_rate

PAIRS = [("alive-proxy", "haproxy"), ("alive-proxy", "haproxy-smart"),
         ("alive-proxy", "nginx-stream"), ("alive-proxy", "direct"),
         ("haproxy", "direct"), ("nginx-stream", "direct")]


def closed_table(summary, names, loads):
    lines = ["| workload | arm | median rate | min..max | per proxy CPU-s | p99 ms (wrk) | errors | load avg |",
             "|---|---|---|---|---|---|---|---|"]
    for load in loads:
        for name in names:
            row = summary.get(f"{load}/{name}")
            if not row:
                continue
            per_cpu = row.get("per_cpu_s")
            per_cpu_text = "-" if per_cpu is None else (
                f"{per_cpu / 2**30:.2f} GiB" if load == "bulk" else f"{per_cpu:,.0f} req")
            lines.append(
                f"| {load} | {name} | {fmt_rate(load, row['median'])} | "
                f"{fmt_rate(load, row['min'])}..{fmt_rate(load, row['max'])} | {per_cpu_text} | "
                f"{row.get('p99_ms', float('nan')):.2f} | {row['errors']} | {row['loadavg']:.2f} |")
    lines += ["", "| workload | pair | rate ratio | per proxy CPU-second ratio |",
              "|---|---|---|---|"]
    for load in loads:
        for a, b in PAIRS:
            ra, rb = summary.get(f"{load}/{a}"), summary.get(f"{load}/{b}")
            if not ra or not rb or not rb["median"]:
                continue
            cpu_ratio = "-"
            if ra.get("per_cpu_s") and rb.get("per_cpu_s"):
                cpu_ratio = f"{ra['per_cpu_s'] / rb['per_cpu_s']:.2f}"
            lines.append(f"| {load} | {a} / {b} | {ra['median'] / rb['median']:.2f} | {cpu_ratio} |")
    return "\n".join(lines)


def latency_summary(records):
    out = {}
    for r in records:
        key = (r["target"], r.get("fraction"))
        out.setdefault(key, []).append(r)
    rows = {}
    for (name, fraction), runs in out.items():
        def med(field):
            values = [x["latency_ms"][field] for x in runs if "latency_ms" in x]
            return statistics.median(values) if values else float("nan")
        rows[(name, fraction)] = {
            "rate": statistics.median(x.get("rate_target", 0) for x in runs),
            "achieved": statistics.median(x.get("rate_achieved", 0) for x in runs),
            "p50": med("p50"), "p99": med("p99"), "p99_9": med("p99_9"), "max": med("max"),
            "errors": sum(x.get("errors", 0) for x in runs),
            "loadavg": statistics.median(x["loadavg"] for x in runs),
        }
    return rows


def latency_table(rows):
    lines = ["| load | arm | rate target (achieved) | p50 ms | p99 ms | p99.9 ms | max ms | errors | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, fraction), row in sorted(rows.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        load = f"{fraction:.0%}" if fraction is not None else "-"
        lines.append(f"| {load} | {name} | {row['rate']:,.0f}/s ({row['achieved']:,.0f}) | "
                     f"{row['p50']:.3f} | {row['p99']:.3f} | {row['p99_9']:.3f} | {row['max']:.2f} | "
                     f"{row['errors']} | {row['loadavg']:.2f} |")
    return "\n".join(lines)


def memory_table(records):
    by = {}
    for r in records:
        if r.get("bytes_per_conn") is not None:
            by.setdefault(r["target"], []).append(r)
    lines = ["| arm | idle connections | RSS growth | per connection | load avg |",
             "|---|---|---|---|---|"]
    for name, runs in by.items():
        per = statistics.median(r["bytes_per_conn"] for r in runs)
        growth = statistics.median(r["rss_after"] - r["rss_before"] for r in runs)
        lines.append(f"| {name} | {runs[0]['connections']} | {growth / 2**20:.1f} MiB | "
                     f"{per / 1024:.2f} KiB | {statistics.median(r['loadavg'] for r in runs):.2f} |")
    return "\n".join(lines)


def failover_table(summary):
    lines = ["| mode | event | outage median (min..max) | runs | long connections survived |",
             "|---|---|---|---|---|"]
    for key, row in summary.items():
        mode, event = key.split("/")
        if "error" in row:
            lines.append(f"| {mode} | - | failed: {row['error']} | - | - |")
            continue
        lines.append(f"| {mode} | {event} | {row['median_s']:.2f} s ({row['min_s']:.2f}..{row['max_s']:.2f}) | "
                     f"{len(row['outages'])} | {row['survived']}/{row['long']} |")
    return "\n".join(lines)


def _nines(q):
    """Percentile axis: 0 at the median, 1 at p90, 2 at p99, 3 at p99.9."""
    return math.log10(1 / (1 - q)) - math.log10(2) if q < 1 else None


def plots(out_dir, results):
    files = []
    lat = results.get("latency", [])
    for fraction in sorted({r.get("fraction") for r in lat if r.get("fraction") is not None}):
        series = {}
        for r in lat:
            if r.get("fraction") != fraction or "curve" not in r or r.get("round") != 0:
                continue
            pts = [(_nines(q), ms) for q, ms in r["curve"] if 0.5 <= q < 1]
            series[r["target"]] = pts
        if not series:
            continue
        ticks = [(_nines(q), label) for q, label in
                 ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"), (0.9999, "p99.99"))]
        name = f"latency-{int(fraction * 100)}pct.svg"
        rate = next((r["rate_target"] for r in lat if r.get("fraction") == fraction), 0)
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(svg.lines(f"Latency at {fraction:.0%} of saturation ({rate:,.0f} req/s)",
                              "ms (from each request's due time)", "percentile", series, ticks,
                              unit_fmt=lambda v: f"{v:.2f}"))
        files.append(name)
    summary = results.get("closed_summary", {})
    names = [n for n in results.get("arms", []) if n != "direct"]
    loads = [w for w in ("keepalive", "newconn", "bulk") if any(k.startswith(w + "/") for k in summary)]
    if summary and "haproxy" in names:
        values = {}
        for load in loads:
            base = summary.get(f"{load}/haproxy", {}).get("per_cpu_s")
            for name in names:
                v = summary.get(f"{load}/{name}", {}).get("per_cpu_s")
                if base and v:
                    values[(load, name)] = v / base
        with open(os.path.join(out_dir, "per-cpu.svg"), "w") as f:
            f.write(svg.bars("Work per proxy CPU-second, relative to HAProxy", "× HAProxy",
                             loads, names, values, unit_fmt=lambda v: f"{v:.2f}"))
        files.append("per-cpu.svg")
        rates = {}
        for load in loads:
            base = summary.get(f"{load}/direct", {}).get("median")
            for name in names:
                v = summary.get(f"{load}/{name}", {}).get("median")
                if base and v:
                    rates[(load, name)] = v / base
        with open(os.path.join(out_dir, "throughput.svg"), "w") as f:
            f.write(svg.bars("Throughput, relative to direct-to-backend", "× direct",
                             loads, names, rates, unit_fmt=lambda v: f"{v:.2f}"))
        files.append("throughput.svg")
    fo = results.get("failover_summary", {})
    samples = {k: v["outages"] for k, v in fo.items() if "outages" in v}
    if samples:
        with open(os.path.join(out_dir, "failover.svg"), "w") as f:
            f.write(svg.points("Client outage per failover (mode/event)", "seconds",
                               list(samples), samples, unit_fmt=lambda v: f"{v:.1f}"))
        files.append("failover.svg")
    mem = results.get("memory", [])
    if mem:
        per = {}
        for r in mem:
            if r.get("bytes_per_conn") is not None:
                per.setdefault(r["target"], []).append(r["bytes_per_conn"] / 1024)
        values = {("idle", k): statistics.median(v) for k, v in per.items()}
        with open(os.path.join(out_dir, "memory.svg"), "w") as f:
            f.write(svg.bars("Resident memory per idle connection", "KiB", ["idle"],
                             list(per), values, unit_fmt=lambda v: f"{v:.1f}"))
        files.append("memory.svg")
    return files


def write(out_dir, results):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    parts = [f"# Load-test results\n\nCommand: `{results['command']}`  \n"
             f"Commit: {results['commit']}  \nMachine: {results['machine']}  \n"
             f"Started {results['started']}, took {results.get('took_s', 0):.0f} s.\n"]
    if results.get("closed_summary"):
        parts.append("## Closed loop (wrk)\n\n" +
                     closed_table(results["closed_summary"], results["arms"], results["workloads"]))
    if results.get("latency"):
        parts.append("## Latency at fixed rates (alive-load, coordinated omission corrected)\n\n" +
                     latency_table(latency_summary(results["latency"])))
    if results.get("memory"):
        parts.append("## Memory per idle connection\n\n" + memory_table(results["memory"]))
    if results.get("failover_summary"):
        parts.append("## Failover (network namespaces)\n\n" + failover_table(results["failover_summary"]))
    if results.get("remote"):
        parts.append("## Existing deployment: direct vs through the VIP\n\n" +
                     latency_table(latency_summary(results["remote"])))
    files = plots(out_dir, results)
    if files:
        parts.append("## Plots\n\n" + "\n".join(f"![{f}]({f})" for f in files))
    text = "\n\n".join(parts) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    return text, files
