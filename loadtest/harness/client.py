#!/usr/bin/env python3
"""The failover scenario's client, run inside the client's network namespace:
- a probe: a new TCP connection and one HTTP request to the VIP every `--every` seconds
  (200 ms to connect, 1 s to answer), each recorded with its wall-clock time and result;
- `--long` keep-alive connections, each sending a request every 100 ms; a connection that
  fails is not reopened, so at the end each one says whether it lived through.
Runs for `--duration` seconds, then prints one JSON object. Standard library only."""

import argparse
import json
import socket
import threading
import time


def request(sock):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(head.split(b"\r\n")[0].decode(errors="replace"))
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed in the body")
        body += chunk


def probe_loop(addr, every, until, out):
    while time.time() < until:
        started = time.time()
        ok = False
        try:
            with socket.create_connection(addr, timeout=0.2) as s:
                s.settimeout(1.0)
                request(s)
                ok = True
        except OSError:
            pass
        out.append((started, ok))
        time.sleep(max(0.0, every - (time.time() - started)))


def long_loop(addr, until, out, index):
    state = {"index": index, "requests": 0, "failed_at": None, "error": None}
    try:
        sock = socket.create_connection(addr, timeout=2.0)
        sock.settimeout(2.0)
    except OSError as e:
        state.update(failed_at=time.time(), error=f"connect: {e}")
        out.append(state)
        return
    with sock:
        while time.time() < until:
            try:
                request(sock)
                state["requests"] += 1
            except OSError as e:
                state.update(failed_at=time.time(), error=str(e))
                break
            time.sleep(0.1)
    out.append(state)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vip", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--every", type=float, default=0.02)
    ap.add_argument("--long", type=int, default=20)
    args = ap.parse_args()
    addr = (args.vip, args.port)
    until = time.time() + args.duration
    probes, longs = [], []
    threads = [threading.Thread(target=probe_loop, args=(addr, args.every, until, probes))]
    threads += [threading.Thread(target=long_loop, args=(addr, until, longs, i))
                for i in range(args.long)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.duration + 10)
    print(json.dumps({"probes": probes, "long": longs}))


if __name__ == "__main__":
    main()
