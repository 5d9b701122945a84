"""The arms of a run: the backend (nginx, one worker) and the targets measured against it:
`direct`, `alive-proxy`, `haproxy` (as configured today), `haproxy-smart`
(`option tcp-smart-accept` / `tcp-smart-connect`) and `nginx-stream`. Every proxy gets one
core (`taskset`), its own config, port and pid file in the work directory."""

import os

from . import procs

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
LOAD_CORE = "0"
PROXY_CORE = "1"
ALL = ["alive-proxy", "haproxy", "haproxy-smart", "nginx-stream"]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


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
    keepalive_timeout 300s;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location = / {{ return 200 "hello from the backend\\n"; }}
        location = /bulk {{ alias {bulk_path}; default_type application/octet-stream; }}
    }}
}}
"""


def haproxy_conf(work, name, listen_port, backend_port, smart):
    # maxconn 8000 needs 16000+ descriptors; the hard limit here is 20000.
    options = "    option tcp-smart-accept\n    option tcp-smart-connect\n" if smart else ""
    return f"""
global
    nbthread 1
    maxconn 8000
    maxpipes 1000
    pidfile {work}/{name}.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option splice-auto
{options}frontend fe
    bind 127.0.0.1:{listen_port} backlog 4096
    default_backend be
backend be
    server b1 127.0.0.1:{backend_port}
"""


def nginx_stream_conf(work, listen_port, backend_port):
    # A proxied connection takes two of worker_connections: 16000 allows 8000.
    return f"""
load_module {STREAM_MODULE};
worker_processes 1;
daemon off;
pid {work}/nginx-stream.pid;
error_log {work}/nginx-stream-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 16000; }}
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


class Target:
    def __init__(self, name, host, port, proc=None):
        self.name, self.host, self.port, self.proc = name, host, port, proc

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def cpu(self):
        return procs.cpu_seconds(self.proc.pid) if self.proc else None

    def rss(self):
        return procs.rss_bytes(self.proc.pid) if self.proc else None


def start_backend(work, bulk_mib):
    bulk_path = f"{work}/bulk.bin"
    with open(bulk_path, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(bulk_mib):
            f.write(chunk)
    port = procs.free_port()
    conf = write(f"{work}/backend.conf", backend_conf(work, port, bulk_path))
    proc = procs.start(["nginx", "-p", work, "-e", f"{work}/backend-error.log", "-c", conf],
                       f"{work}/backend.log", LOAD_CORE)
    procs.wait_listening("127.0.0.1", port, proc)
    return port


def start_targets(wanted, work, backend_port, binaries, alive_vip, alive_args):
    targets = [Target("direct", "127.0.0.1", backend_port)]
    if "alive-proxy" in wanted:
        conf = write(f"{work}/alive.yaml", alive_conf(work, backend_port, alive_vip))
        proc = procs.start([binaries["alive-proxy"], "run", "--workers", "1", "--config", conf,
                            "--watch-interval", "0"] + alive_args,
                           f"{work}/alive-proxy.log", PROXY_CORE)
        procs.wait_listening(alive_vip, backend_port, proc)
        targets.append(Target("alive-proxy", alive_vip, backend_port, proc))
    for name, smart in (("haproxy", False), ("haproxy-smart", True)):
        if name in wanted:
            port = procs.free_port()
            conf = write(f"{work}/{name}.cfg", haproxy_conf(work, name, port, backend_port, smart))
            proc = procs.start(["haproxy", "-db", "-f", conf], f"{work}/{name}.log", PROXY_CORE)
            procs.wait_listening("127.0.0.1", port, proc)
            targets.append(Target(name, "127.0.0.1", port, proc))
    if "nginx-stream" in wanted:
        port = procs.free_port()
        conf = write(f"{work}/nginx-stream.conf", nginx_stream_conf(work, port, backend_port))
        proc = procs.start(["nginx", "-p", work, "-e", f"{work}/nginx-stream-error.log", "-c", conf],
                           f"{work}/nginx-stream.log", PROXY_CORE)
        procs.wait_listening("127.0.0.1", port, proc)
        targets.append(Target("nginx-stream", "127.0.0.1", port, proc))
    return targets
