"""Closed-loop workloads with wrk, interleaved over the targets round by round:
`keepalive` (requests/s over persistent connections), `newconn` (a new TCP connection per
request) and `bulk` (MiB/s of a large file over a few connections). Each run also records
the proxy's CPU seconds, so work per proxy CPU-second can be compared when core 0 (backend
and wrk) saturates first."""

import os
import re
import statistics
import subprocess
import time

from . import procs
from .arms import LOAD_CORE

UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_size(text):
    m = re.match(r"([\d.]+)([KMGT]?B)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else 0.0


def parse_wrk(out):
    res = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+\w+) read", out)
    if m:
        res["requests"] = int(m.group(1))
        res["bytes"] = parse_size(m.group(4))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Transfer/sec:\s+([\d.]+\w+)", out)
    res["bytes_per_s"] = parse_size(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if m:
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        res["p99_ms"] = float(m.group(1)) * scale
    return res


def workloads(conns, bulk_conns):
    return {
        "keepalive": dict(path="/", conns=conns, headers=[]),
        "newconn": dict(path="/", conns=conns, headers=["-H", "Connection: close"]),
        "bulk": dict(path="/bulk", conns=bulk_conns, headers=[]),
    }


def run_wrk(target, load, duration, work):
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{load['conns']}", f"-d{max(1, int(duration))}s",
            "--latency", "--timeout", "5s"] + load["headers"] + [target.url(load["path"])]
    before = target.cpu()
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    elapsed = time.monotonic() - t0
    after = target.cpu()
    res = parse_wrk(out)
    res["elapsed"] = elapsed
    res["loadavg"] = procs.loadavg()
    if before is not None and after is not None:
        res["proxy_cpu_s"] = after - before
    with open(f"{work}/wrk.log", "a") as f:
        f.write(f"=== {target.name} {' '.join(argv)}\n{out}\n")
    return res


def run(targets, chosen, loads, rounds, duration, work):
    """Warm-up, then `rounds` rounds; in each, every workload on every target, the order
    rotating by one target per round."""
    for target in targets:  # warm-up: page cache, accept queues, lazy allocations
        for name in chosen:
            run_wrk(target, loads[name], min(1, duration), work)
    records = []
    for rnd in range(rounds):
        shift = rnd % len(targets)
        order = targets[shift:] + targets[:shift]
        for name in chosen:
            for target in order:
                res = run_wrk(target, loads[name], duration, work)
                res.update(target=target.name, workload=name, round=rnd)
                records.append(res)
                rate = res["bytes_per_s"] if name == "bulk" else res["rps"]
                procs.log(f"round {rnd + 1}/{rounds} {name:9} {target.name:13} "
                          f"{fmt_rate(name, rate):>14}  proxy cpu {res.get('proxy_cpu_s', 0):.2f}s  "
                          f"errors {res['socket_errors'] + res['non_2xx']}  load {res['loadavg']:.2f}")
    return records


def summarize(records, names, loads):
    summary = {}
    for load in loads:
        for name in names:
            runs = [r for r in records if r["target"] == name and r["workload"] == load]
            if not runs:
                continue
            metric = "bytes_per_s" if load == "bulk" else "rps"
            rates = [r[metric] for r in runs]
            row = {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
                   "errors": sum(r["socket_errors"] + r["non_2xx"] for r in runs),
                   "loadavg": statistics.median(r["loadavg"] for r in runs)}
            per_cpu = []
            for r in runs:
                cpu = r.get("proxy_cpu_s")
                if cpu:
                    work_done = r["bytes"] if load == "bulk" else r.get("requests", 0)
                    per_cpu.append(work_done / cpu)
            if per_cpu:
                row["per_cpu_s"] = statistics.median(per_cpu)
            p99 = [r["p99_ms"] for r in runs if "p99_ms" in r]
            if p99:
                row["p99_ms"] = statistics.median(p99)
            summary[f"{load}/{name}"] = row
    return summary


def fmt_rate(load, value):
    if load == "bulk":
        return f"{value / 2**20:,.0f} MiB/s"
    return f"{value:,.0f}/s"
