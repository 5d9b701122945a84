#!/usr/bin/env python3
"""The whole product measured, side by side, on one machine (method: loadtest/README.md,
latest results: docs/performance.md):

    python3 loadtest/bench.py --out DIR            # full run, under 15 minutes here
    python3 loadtest/bench.py --quick --out DIR    # the same pipeline, small (< 2 min)

Phases (each can be skipped with --skip): `closed` (wrk: keep-alive requests, new
connections, bulk; rate and work per proxy CPU-second), `latency` (alive-load at 25/50/75 %
of the slowest arm's saturation, coordinated omission corrected), `memory` (RSS growth per
idle connection), `failover` (network namespaces: alive-proxy's HA modes and keepalived,
host death and SIGTERM). Arms: direct, alive-proxy, HAProxy (as configured today and with
tcp-smart-accept/connect), nginx stream. Writes results.json, results.md and SVG plots.

Against an existing deployment instead (both --rate and --duration required):

    python3 loadtest/bench.py --backend 10.0.0.5:80 --backend 10.0.0.6:80 \\
        --vip 10.0.0.100:80 --rate 500 --duration 30 --out DIR [--dry-run]

Builds what it needs first (`cargo build --release`) unless --no-build; installs the Debian
packages it needs (scripts/install-deps.sh test, needs root) unless --no-install.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import arms, closed, failover, latency, memory, procs, remote, report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ["closed", "latency", "memory", "failover"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for results.json, results.md, plots")
    ap.add_argument("--quick", action="store_true", help="the same pipeline, small (< 2 min)")
    ap.add_argument("--arms", default=",".join(arms.ALL),
                    help=f"proxies besides direct (default: {','.join(arms.ALL)})")
    ap.add_argument("--skip", default="", help=f"comma list of phases to skip: {','.join(PHASES)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per closed-loop run (default 4); with --vip, of the whole load")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--bulk-conns", type=int, default=4)
    ap.add_argument("--bulk-mib", type=int, default=64)
    ap.add_argument("--workloads", default="keepalive,newconn,bulk")
    ap.add_argument("--latency-duration", type=float, default=5)
    ap.add_argument("--idle-connections", type=int, default=6000)
    ap.add_argument("--failover-modes", default=None,
                    help="comma list of etcd,kube,vrrp,keepalived (default: all available)")
    ap.add_argument("--failover-repeats", type=int, default=3)
    ap.add_argument("--alive-vip", default="127.0.0.2")
    ap.add_argument("--alive-args", default="", help="extra arguments for `alive-proxy run`")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--binaries", default=os.path.join(ROOT, "target/release"),
                    help="where alive-proxy, alive-backend, alive-load and examples/ are "
                         "(the suite's quick run uses target/debug with --no-build)")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--backend", action="append", default=[],
                    help="HOST:PORT of an existing ALB node (repeatable); with --vip")
    ap.add_argument("--vip", help="HOST:PORT of an existing VIP, measured against --backend")
    ap.add_argument("--rate", type=float, help="requests/s for --backend/--vip (required there)")
    ap.add_argument("--dry-run", action="store_true", help="with --vip: print the plan, send nothing")
    args = ap.parse_args(argv)
    remote_run = bool(args.backend or args.vip)
    if remote_run and not (args.backend and args.vip and args.rate and args.duration):
        ap.error("--backend and --vip go together, with both --rate and --duration "
                 "(no unbounded load on a deployment)")
    if args.duration is None:
        args.duration = 4
    if args.quick:
        args.rounds, args.duration = 1, 1
        args.latency_duration, args.idle_connections = 1, 500
        args.failover_repeats = 1
        args.bulk_mib = 16
        if args.failover_modes is None:
            args.failover_modes = "etcd"
    return args


def binaries(directory, no_build, need_examples):
    if not no_build:
        cmd = ["cargo", "build", "--release", "--bin", "alive-proxy", "--bin", "alive-backend",
               "--bin", "alive-load"]
        if need_examples:
            cmd += ["--example", "fake_kube_api"]
        procs.log(" ".join(cmd))
        subprocess.run(cmd, cwd=ROOT, check=True)
    found = {name: os.path.join(directory, name)
             for name in ("alive-proxy", "alive-backend", "alive-load")}
    found["fake_kube_api"] = os.path.join(directory, "examples/fake_kube_api")
    missing = [p for name, p in found.items() if name != "fake_kube_api" and not os.path.exists(p)]
    if missing:
        sys.exit(f"missing binaries (build them, or drop --no-build): {', '.join(missing)}")
    return found


def vrrp_available(binary, work):
    """Whether this alive-proxy holds a lockless VIP with peers by VRRP."""
    path = f"{work}/vrrp-probe.yaml"
    with open(path, "w") as f:
        f.write('instances:\n  - vip:\n      vip: 203.0.113.100\n      id: 51\n'
                '      interface: "eth0"\n      peer: [ "203.0.113.12" ]\n'
                '    ipvs:\n      ips: [ "203.0.113.51" ]\n      ports:\n        - port: 80\n')
    out = subprocess.run([binary, "check", "-c", path], capture_output=True, text=True, timeout=30)
    return "vrrp" in (out.stdout + out.stderr).lower()


def git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_remote(args, results, work, bins):
    conns = max(1, min(args.conns, int(args.rate)))
    steps = remote.plan(args.backend, args.vip, args.rate, args.duration, conns)
    if args.dry_run:
        print(json.dumps(steps, indent=1))
        return
    results["remote"] = remote.run(bins["alive-load"], args.backend, args.vip, args.rate,
                                   args.duration, conns, args.rounds, work)


def run_local(args, results, work, bins, skip):
    backend_port = arms.start_backend(work, args.bulk_mib)
    wanted = [a for a in args.arms.split(",") if a]
    alive_args = args.alive_args.split() if args.alive_args else []
    targets = arms.start_targets(wanted, work, backend_port, bins, args.alive_vip, alive_args)
    results["arms"] = [t.name for t in targets]
    loads = closed.workloads(args.conns, args.bulk_conns)
    chosen = [w for w in args.workloads.split(",") if w in loads]
    results["workloads"] = chosen
    if "closed" not in skip:
        records = closed.run(targets, chosen, loads, args.rounds, args.duration, work)
        results["closed"] = records
        results["closed_summary"] = closed.summarize(records, results["arms"], chosen)
    if "latency" not in skip:
        saturated = latency.saturation(results.get("closed_summary", {}), results["arms"])
        if saturated is None:
            saturated = 2000.0
            procs.log("latency: no closed-loop keep-alive figures; using 2000 req/s as saturation")
        results["saturation_rps"] = saturated
        results["latency"] = latency.run(bins["alive-load"], targets, saturated, args.conns,
                                         args.latency_duration, 1, work)
    if "memory" not in skip:
        proxies = [t for t in targets if t.proc is not None]
        results["memory"] = memory.run(proxies, args.idle_connections, 1)
    for target in targets:
        if target.proc is not None:
            procs.stop(target.proc)
    if "failover" not in skip:
        if os.geteuid() != 0:
            procs.log("failover: needs root (network namespaces); skipped")
            return
        modes = args.failover_modes.split(",") if args.failover_modes else None
        if modes is None:
            modes = ["etcd", "kube"]
            if vrrp_available(bins["alive-proxy"], work):
                modes.append("vrrp")
            modes.append("keepalived")
        events = ["death", "sigterm"]
        results["failover"] = failover.run(modes, bins, work, args.failover_repeats, events)
        results["failover_summary"] = failover.summarize(results["failover"])


def main(argv=None):
    args = parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if os.cpu_count() < 2:
        sys.exit("needs 2 cores: one for the proxy, one for backend + load generator")
    procs.install_signal_handlers()
    if not args.no_install and not (args.backend or args.vip):
        subprocess.run(["bash", os.path.join(ROOT, "scripts/install-deps.sh"), "test"], check=True)
    bins = binaries(args.binaries, args.no_build, "failover" not in skip)
    work = tempfile.mkdtemp(prefix="alive-loadtest-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user and read bulk.bin
    procs.log(f"work dir {work}")
    started = time.monotonic()
    results = {"command": " ".join(["python3", "loadtest/bench.py"] + sys.argv[1:]),
               "commit": git_commit(), "machine": procs.machine(),
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "args": vars(args)}
    try:
        if args.backend or args.vip:
            run_remote(args, results, work, bins)
        else:
            run_local(args, results, work, bins, skip)
    finally:
        procs.stop_all()
        results["took_s"] = time.monotonic() - started
        if not args.dry_run:
            text, files = report.write(args.out, results)
            print(text)
            procs.log(f"wrote {args.out}/results.json, results.md, {', '.join(files) or 'no plots'}")
        procs.log(f"logs kept in {work}")


if __name__ == "__main__":
    main()
