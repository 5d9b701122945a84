"""Processes the harness starts (each the leader of its own process group, killed at
exit, on error and on SIGINT/SIGTERM), and what it reads of them from /proc."""

import os
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED = []  # Popen objects, each the leader of its own process group


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop_all():
    """Kill every process group this harness started, then reap them (bounded wait)."""
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
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    STARTED.clear()


def stop(proc, sig=signal.SIGTERM, timeout=10.0):
    """Stop one process this harness started (its group), waiting up to `timeout`."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
    if proc in STARTED:
        STARTED.remove(proc)


def install_signal_handlers():
    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def start(argv, logfile, core=None, env=None):
    prefix = ["taskset", "-c", core] if core is not None else []
    log(f"start{' on core ' + core if core else ''}: {' '.join(argv)}")
    out = open(logfile, "ab")
    proc = subprocess.Popen(prefix + argv, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    STARTED.append(proc)
    return proc


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host, port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
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
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
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
    """utime + stime of pid and its descendants, in seconds (threads included)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read()
        except OSError:
            continue
        rest = fields[fields.rindex(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])  # fields 14 and 15 of stat
    return total / CLK_TCK


def rss_bytes(pid):
    """Resident memory of pid and its descendants (VmRSS summed)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def machine():
    """What the figures were measured on."""
    info = {"cores": os.cpu_count(), "kernel": os.uname().release}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_kib"] = int(f.readline().split()[1])
    except OSError:
        pass
    return info


def loadavg():
    return os.getloadavg()[0]
