"""Latency at fixed rates: `alive-load` (an open-loop generator that measures from each
request's due time, correcting coordinated omission) at 25 %, 50 % and 75 % of the slowest
arm's closed-loop saturation rate, every arm at every rate, interleaved."""

import json
import subprocess

from . import procs
from .arms import LOAD_CORE

FRACTIONS = (0.25, 0.5, 0.75)


def saturation(summary, names):
    """The slowest proxy arm's median keep-alive rate (direct excluded)."""
    rates = [summary[f"keepalive/{n}"]["median"] for n in names
             if n != "direct" and f"keepalive/{n}" in summary]
    return min(rates) if rates else None


def run_one(binary, target, rate, conns, duration, work):
    argv = ["taskset", "-c", LOAD_CORE, binary, "--url", target.url("/"), "--rate", f"{rate:.0f}",
            "--connections", str(conns), "--duration", str(duration),
            "--warmup", str(min(1.0, duration / 2))]
    before = target.cpu()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    after = target.cpu()
    with open(f"{work}/alive-load.log", "a") as f:
        f.write(f"=== {target.name} {' '.join(argv)}\n{out.stdout}\n{out.stderr}\n")
    try:
        res = json.loads(out.stdout)
    except json.JSONDecodeError:
        res = {"requests": 0, "errors": 1, "first_error": out.stderr.strip()[-300:]}
    res["loadavg"] = procs.loadavg()
    if before is not None and after is not None:
        res["proxy_cpu_s"] = after - before
    return res


def run(binary, targets, saturated, conns, duration, rounds, work):
    records = []
    rates = [saturated * f for f in FRACTIONS]
    for rnd in range(rounds):
        shift = rnd % len(targets)
        order = targets[shift:] + targets[:shift]
        for fraction, rate in zip(FRACTIONS, rates):
            for target in order:
                res = run_one(binary, target, rate, conns, duration, work)
                res.update(target=target.name, fraction=fraction, round=rnd)
                records.append(res)
                lat = res.get("latency_ms", {})
                procs.log(f"latency {fraction:.0%} ({rate:,.0f}/s) {target.name:13} "
                          f"p50 {lat.get('p50', 0):.3f} p99 {lat.get('p99', 0):.3f} "
                          f"p99.9 {lat.get('p99_9', 0):.3f} ms  errors {res.get('errors')}")
    return records
