#!/usr/bin/env python3
"""Side-by-side load test: alive-proxy vs direct-to-backend vs HAProxy (mode tcp) vs nginx
stream, on one machine, each proxy pinned to the same single core.

Method (see loadtest/README.md): the backend (nginx, one worker) and the load generator
(wrk, one thread) share core 0; every proxy runs alone on core 1 (taskset). For each round,
each workload runs once against each target, in an order that rotates every round, so
drift (thermal, page cache, other tenants) spreads over all targets. Reported: the median
over rounds of the rate, and of work per proxy CPU-second (utime + stime of the proxy's
processes from /proc/PID/stat, the fair comparison when core 0 saturates first).

Workloads:
  keepalive  HTTP requests/s over persistent connections (wrk -c CONNS)
  newconn    new TCP connections/s: one request per connection (`Connection: close`)
  bulk       MiB/s of a large file (BULK_MIB) downloaded over a few connections

Python 3 stdlib only. Every loop is bounded; every process started here is killed at
exit (normal, exception, SIGINT or SIGTERM).
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
LOAD_CORE = "0"
PROXY_CORE = "1"

STARTED = []  # Popen objects, each the leader of its own process group


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop_all():
    """Kill every process group this script started, then reap them (bounded wait)."""
    for proc in STARTED:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for proc in STARTED:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    STARTED.clear()


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def start(argv, logfile, core):
    log(f"start on core {core}: {' '.join(argv)}")
    out = open(logfile, "ab")
    proc = subprocess.Popen(
        ["taskset", "-c", core] + argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    STARTED.append(proc)
    return proc


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host, port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} not listening after {timeout}s")


def process_tree(pid):
    """pid and all its descendants (nginx master + worker, etc.)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    for _ in range(10000):  # bounded walk
        if not todo:
            break
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid):
    """utime + stime of pid and its descendants, in seconds (threads are included)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read()
        except OSError:
            continue
        rest = fields[fields.rindex(")") + 2 :].split()
        total += int(rest[11]) + int(rest[12])  # fields 14 and 15 of stat
    return total / CLK_TCK


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


# ---------------------------------------------------------------- configs


def backend_conf(work, port, bulk_path):
    return f"""
worker_processes 1;
daemon off;
pid {work}/backend.pid;
error_log {work}/backend-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp-body;
    proxy_temp_path {work}/tmp-proxy;
    fastcgi_temp_path {work}/tmp-fastcgi;
    uwsgi_temp_path {work}/tmp-uwsgi;
    scgi_temp_path {work}/tmp-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location = / {{ return 200 "hello from the backend\\n"; }}
        location = /bulk {{ alias {bulk_path}; default_type application/octet-stream; }}
    }}
}}
"""


def haproxy_conf(work, listen_port, backend_port):
    return f"""
global
    nbthread 1
    maxconn 8000
    maxpipes 1000
    pidfile {work}/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option splice-auto
frontend fe
    bind 127.0.0.1:{listen_port} backlog 4096
    default_backend be
backend be
    server b1 127.0.0.1:{backend_port}
"""


def nginx_stream_conf(work, listen_port, backend_port):
    return f"""
load_module {STREAM_MODULE};
worker_processes 1;
daemon off;
pid {work}/nginx-stream.pid;
error_log {work}/nginx-stream-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 9000; }}
stream {{
    server {{
        listen 127.0.0.1:{listen_port} backlog=4096 reuseport;
        proxy_pass 127.0.0.1:{backend_port};
    }}
}}
"""


def alive_conf(work, backend_port, vip):
    # The seed's rule: the virtual server port equals the real server port, so the VIP
    # is a second loopback address on the backend's port. The admin socket lives in the
    # work dir and admin HTTP is off, so a daemon already running elsewhere is untouched.
    return f"""admin:
  socket: "{work}/admin.sock"
  http: "off"
instances:
  - vip:
      vip: {vip}
      interface: "lo"
      name: "bench"
    ipvs:
      ips: [ "127.0.0.1" ]
      ports:
        - port: {backend_port}
          virtual_server_config: |
            lb_algo rr
            lb_kind NAT
            protocol TCP
"""


# ---------------------------------------------------------------- targets


class Target:
    def __init__(self, name, host, port, proc=None):
        self.name, self.host, self.port, self.proc = name, host, port, proc

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def cpu(self):
        return cpu_seconds(self.proc.pid) if self.proc else None


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def start_targets(args, work, backend_port):
    targets = [Target("direct", "127.0.0.1", backend_port)]
    wanted = args.targets.split(",")
    if "alive-proxy" in wanted:
        binary = os.path.join(ROOT, "target/release/alive-proxy")
        conf = write(f"{work}/alive.yaml", alive_conf(work, backend_port, args.alive_vip))
        extra = args.alive_args.split() if args.alive_args else []
        proc = start([binary, "run", "--workers", "1", "--config", conf] + extra,
                     f"{work}/alive-proxy.log", PROXY_CORE)
        wait_listening(args.alive_vip, backend_port, proc)
        targets.append(Target("alive-proxy", args.alive_vip, backend_port, proc))
    if "haproxy" in wanted:
        port = free_port()
        conf = write(f"{work}/haproxy.cfg", haproxy_conf(work, port, backend_port))
        proc = start(["haproxy", "-db", "-f", conf], f"{work}/haproxy.log", PROXY_CORE)
        wait_listening("127.0.0.1", port, proc)
        targets.append(Target("haproxy", "127.0.0.1", port, proc))
    if "nginx" in wanted:
        port = free_port()
        conf = write(f"{work}/nginx-stream.conf", nginx_stream_conf(work, port, backend_port))
        proc = start(["nginx", "-p", work, "-e", f"{work}/nginx-stream-error.log", "-c", conf],
                     f"{work}/nginx-stream.log", PROXY_CORE)
        wait_listening("127.0.0.1", port, proc)
        targets.append(Target("nginx-stream", "127.0.0.1", port, proc))
    return targets


# ---------------------------------------------------------------- workloads


def workloads(args):
    return {
        "keepalive": dict(path="/", conns=args.conns, headers=[]),
        "newconn": dict(path="/", conns=args.conns, headers=["-H", "Connection: close"]),
        "bulk": dict(path="/bulk", conns=args.bulk_conns, headers=[]),
    }


def run_wrk(target, load, duration, work):
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{load['conns']}", f"-d{duration}s",
            "--latency", "--timeout", "5s"] + load["headers"] + [target.url(load["path"])]
    before = target.cpu()
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    elapsed = time.monotonic() - t0
    after = target.cpu()
    res = parse_wrk(out)
    res["elapsed"] = elapsed
    # 1-minute load average after the run: > 2 on this 2-core box means other jobs competed.
    res["loadavg"] = os.getloadavg()[0]
    if before is not None and after is not None:
        res["proxy_cpu_s"] = after - before
    with open(f"{work}/wrk.log", "a") as f:
        f.write(f"=== {target.name} {' '.join(argv)}\n{out}\n")
    return res


def perf_profile(target, name, load, duration, work):
    """Sample the proxy's processes (all of its tree) during one extra run; return the top
    of `perf report` by shared object, then by symbol (self time)."""
    data = f"{work}/perf-{target.name}-{name}.data"
    pids = ",".join(map(str, process_tree(target.proc.pid)))
    rec = subprocess.Popen(["taskset", "-c", LOAD_CORE, "perf", "record", "-F", "499", "-g",
                            "-o", data, "-p", pids],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    STARTED.append(rec)
    time.sleep(0.5)
    run_wrk(target, load, duration, work)
    os.killpg(rec.pid, signal.SIGINT)  # perf writes its file on SIGINT
    try:
        rec.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(rec.pid, signal.SIGKILL)
        rec.wait(timeout=5)

    def report(sort, limit):
        out = subprocess.run(["perf", "report", "--stdio", "--no-children", "-i", data,
                              "--percent-limit", limit, "-g", "none", "--sort", sort],
                             capture_output=True, text=True, timeout=120).stdout
        return [" ".join(l.split()) for l in out.splitlines()
                if l.strip() and not l.startswith("#")]

    by_dso = report("dso", "0.5")
    by_symbol = report("dso,symbol", "1.5")
    with open(f"{work}/perf-{target.name}-{name}.txt", "w") as f:
        f.write("\n".join(by_dso + [""] + by_symbol) + "\n")
    return by_dso[:6] + ["..."] + by_symbol[:15]


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
                   "errors": sum(r["socket_errors"] + r["non_2xx"] for r in runs)}
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
            summary[(load, name)] = row
    return summary


def fmt_rate(load, value):
    if load == "bulk":
        return f"{value / 2**20:,.0f} MiB/s"
    return f"{value:,.0f}/s"


def table(summary, names, loads):
    lines = ["| workload | target | median rate | min..max | per proxy CPU-s | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    for load in loads:
        for name in names:
            row = summary.get((load, name))
            if not row:
                continue
            per_cpu = row.get("per_cpu_s")
            per_cpu_text = "-" if per_cpu is None else (
                f"{per_cpu / 2**30:.2f} GiB" if load == "bulk" else f"{per_cpu:,.0f} req")
            lines.append(
                f"| {load} | {name} | {fmt_rate(load, row['median'])} | "
                f"{fmt_rate(load, row['min'])}..{fmt_rate(load, row['max'])} | {per_cpu_text} | "
                f"{row.get('p99_ms', float('nan')):.2f} | {row['errors']} |")
    lines += ["", "Ratios (median rate; per proxy CPU-second in parentheses):", "",
              "| workload | pair | rate ratio | per-CPU ratio |", "|---|---|---|---|"]
    pairs = [("alive-proxy", "haproxy"), ("alive-proxy", "nginx-stream"),
             ("alive-proxy", "direct"), ("haproxy", "direct"), ("nginx-stream", "direct"),
             ("haproxy", "nginx-stream")]
    for load in loads:
        for a, b in pairs:
            ra, rb = summary.get((load, a)), summary.get((load, b))
            if not ra or not rb or not rb["median"]:
                continue
            cpu_ratio = "-"
            if ra.get("per_cpu_s") and rb.get("per_cpu_s"):
                cpu_ratio = f"{ra['per_cpu_s'] / rb['per_cpu_s']:.2f}"
            lines.append(f"| {load} | {a} / {b} | {ra['median'] / rb['median']:.2f} | {cpu_ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="alive-proxy,haproxy,nginx",
                    help="comma list of proxies besides direct: alive-proxy,haproxy,nginx")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per run")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--bulk-conns", type=int, default=4)
    ap.add_argument("--bulk-mib", type=int, default=64)
    ap.add_argument("--workloads", default="keepalive,newconn,bulk")
    ap.add_argument("--alive-vip", default="127.0.0.2")
    ap.add_argument("--alive-args", default="", help="extra arguments for `alive-proxy run`")
    ap.add_argument("--out", default=None, help="write JSON results here")
    ap.add_argument("--perf", action="store_true",
                    help="after the rounds, profile each proxy once per workload with perf record")
    args = ap.parse_args()
    if os.cpu_count() < 2:
        sys.exit("needs 2 cores: one for the proxy, one for backend + load generator")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    work = tempfile.mkdtemp(prefix="alive-loadtest-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user and read bulk.bin
    log(f"work dir {work}")
    try:
        bulk_path = f"{work}/bulk.bin"
        with open(bulk_path, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(args.bulk_mib):
                f.write(chunk)
        backend_port = free_port()
        backend = start(["nginx", "-p", work, "-e", f"{work}/backend-error.log", "-c",
                         write(f"{work}/backend.conf", backend_conf(work, backend_port, bulk_path))],
                        f"{work}/backend.log", LOAD_CORE)
        wait_listening("127.0.0.1", backend_port, backend)
        targets = start_targets(args, work, backend_port)
        loads = workloads(args)
        chosen = [w for w in args.workloads.split(",") if w in loads]
        names = [t.name for t in targets]

        for target in targets:  # warm-up: page cache, accept queues, lazy allocations
            for name in chosen:
                run_wrk(target, loads[name], 1, work)

        records = []
        for rnd in range(args.rounds):
            shift = rnd % len(targets)
            order = targets[shift:] + targets[:shift]
            for name in chosen:
                for target in order:
                    res = run_wrk(target, loads[name], args.duration, work)
                    res.update(target=target.name, workload=name, round=rnd)
                    records.append(res)
                    rate = res["bytes_per_s"] if name == "bulk" else res["rps"]
                    log(f"round {rnd + 1}/{args.rounds} {name:9} {target.name:12} "
                        f"{fmt_rate(name, rate):>14}  proxy cpu {res.get('proxy_cpu_s', 0):.2f}s  "
                        f"errors {res['socket_errors'] + res['non_2xx']}")

        summary = summarize(records, names, chosen)
        report = table(summary, names, chosen)
        loads_seen = [r["loadavg"] for r in records]
        report += (f"\n\nLoad average (1 min) after runs: median {statistics.median(loads_seen):.2f}, "
                   f"max {max(loads_seen):.2f} (2 cores; above ~2 means other jobs competed).")
        try:
            commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
        report += f"\nalive-proxy tree at commit {commit}; command: {' '.join(sys.argv)}"
        print(report)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "records": records,
                           "summary": {f"{k[0]}/{k[1]}": v for k, v in summary.items()},
                           "table": report}, f, indent=1)
        if args.perf:
            for target in targets:
                if not target.proc:
                    continue
                for name in chosen:
                    top = perf_profile(target, name, loads[name], args.duration, work)
                    print(f"\n### perf: {target.name} / {name} (top symbols, self time)\n")
                    print("\n".join("    " + l for l in top))
        for target in targets:
            if target.proc and target.proc.poll() is not None:
                log(f"WARNING: {target.name} exited during the run ({target.proc.returncode})")
    finally:
        stop_all()
        log(f"logs kept in {work}")


if __name__ == "__main__":
    main()
