"""Measuring an existing deployment: the operator's own ALB nodes directly and through
their VIP, at a rate and for a time they choose (both required: no unbounded load on
anyone's production), with `alive-load`. `--dry-run` prints what would be sent."""

from . import procs
from .arms import Target
from .latency import run_one


def plan(backends, vip, rate, duration, conns):
    steps = [(f"direct {b}", b) for b in backends] + [(f"vip {vip}", vip)]
    return [{"arm": name, "url": f"http://{addr}/", "rate": rate, "duration_s": duration,
             "connections": conns, "requests": int(rate * duration)} for name, addr in steps]


def run(binary, backends, vip, rate, duration, conns, rounds, work):
    records = []
    for rnd in range(rounds):
        for name, addr in [(f"direct {b}", b) for b in backends] + [(f"vip {vip}", vip)]:
            host, _, port = addr.rpartition(":")
            target = Target(name, host, int(port))
            res = run_one(binary, target, rate, conns, duration, work)
            res.update(target=name, round=rnd, fraction=None)
            records.append(res)
            lat = res.get("latency_ms", {})
            procs.log(f"remote {name:28} p50 {lat.get('p50', 0):.3f} p99 {lat.get('p99', 0):.3f} "
                      f"p99.9 {lat.get('p99_9', 0):.3f} ms errors {res.get('errors')}")
    return records
