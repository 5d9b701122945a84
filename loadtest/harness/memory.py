"""Memory per idle connection: N connections opened through each proxy to the backend and
left idle; the proxy's resident memory growth divided by N. The harness holds the client
ends itself (non-blocking sockets, so opening thousands is quick and bounded)."""

import resource
import selectors
import socket
import time

from . import procs


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_idle(host, port, count, timeout=30.0):
    """`count` connected sockets (or as many as connected within `timeout`)."""
    sel = selectors.DefaultSelector()
    pending, done = {}, []
    batch = 200
    deadline = time.monotonic() + timeout
    opened = 0
    while (opened < count or pending) and time.monotonic() < deadline:
        while opened < count and len(pending) < batch:
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.setblocking(False)
            s.connect_ex((host, port))
            sel.register(s, selectors.EVENT_WRITE)
            pending[s.fileno()] = s
            opened += 1
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            sel.unregister(s)
            del pending[s.fileno()]
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append(s)
            else:
                s.close()
    for s in pending.values():
        sel.unregister(s)
        s.close()
    sel.close()
    return done


def settle(target, seconds=2.0):
    """RSS once it stopped moving (each proxy connects its backend side lazily)."""
    last = target.rss()
    for _ in range(int(seconds / 0.25)):
        time.sleep(0.25)
        now = target.rss()
        if now == last:
            return now
        last = now
    return last


def run(targets, count, rounds):
    limit = raise_fd_limit()
    if limit < count + 500:
        count = max(100, limit - 500)
        procs.log(f"memory: descriptor limit {limit}; measuring {count} connections")
    records = []
    for rnd in range(rounds):
        for target in targets:
            if target.proc is None:
                continue
            before = settle(target)
            conns = open_idle(target.host, target.port, count)
            after = settle(target)
            held = len(conns)
            for s in conns:
                s.close()
            time.sleep(1.0)  # let the proxy close its backend sides before the next arm
            per = (after - before) / held if held else None
            records.append({"target": target.name, "round": rnd, "connections": held,
                            "rss_before": before, "rss_after": after, "bytes_per_conn": per,
                            "loadavg": procs.loadavg()})
            procs.log(f"memory {target.name:13} {held} idle connections: "
                      f"{(after - before) / 2**20:.1f} MiB, "
                      f"{(per or 0) / 1024:.2f} KiB per connection")
    return records
