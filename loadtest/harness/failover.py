"""VIP failover measured in network namespaces: two LB hosts, three ALB stand-ins
(alive-backend), a client probing the VIP with a new connection every 20 ms while holding
long keep-alive connections. For each HA mode — alive-proxy with an etcd lease, with a
Kubernetes Lease (the in-tree test API server), with VRRP when the binary has it, and
Debian's keepalived (VRRP, advert_int 1) in front of HAProxy as the reference — the holder
is killed (link down) and stopped (SIGTERM) in turn, repeatedly. Reported per event: the
client's outage (longest run of failed probes) and how many long connections survived.

Only 203.0.113.0/24 is used, inside namespaces this harness creates (named `apbench<pid>-*`)
and removes; the processes it stops are its own."""

import json
import os
import signal
import statistics
import subprocess
import time

from . import procs

PREFIX = "apbench"
NET = "203.0.113"
VIP = f"{NET}.100"
PORT = 8080
LBS = {"lb1": f"{NET}.11", "lb2": f"{NET}.12"}
ALBS = [f"{NET}.51", f"{NET}.52", f"{NET}.53"]
LOCK = f"{NET}.2"
CLIENT = f"{NET}.200"
CLIENT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client.py")


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=check)


def sweep_stale():
    """Namespaces left by an earlier harness run whose process is gone."""
    out = ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            remove_namespace(name)


def remove_namespace(ns):
    pids = ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:  # processes inside our own namespace, which we created
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    ip("netns", "del", ns, check=False)


class Lab:
    def __init__(self):
        sweep_stale()
        self.id = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.id}-sw"
        self.hosts = []
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def ns(self, host):
        return f"{self.id}-{host}"

    def add(self, host, addr):
        ns = self.ns(host)
        port = f"p{len(self.hosts)}"
        ip("netns", "add", ns)
        self.hosts.append(host)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    def exec(self, host, argv):
        return ["ip", "netns", "exec", self.ns(host)] + argv

    def with_hostname(self, host, argv):
        """In the host's namespace and in a UTS namespace named after it (its identity)."""
        return ["unshare", "--uts", "sh", "-c",
                'hostname "$0" && ns="$1" && shift && exec ip netns exec "$ns" "$@"',
                host, self.ns(host)] + argv

    def has_vip(self, host):
        out = ip("-n", self.ns(host), "-o", "addr", "show", "dev", "eth0", check=False).stdout
        return f" {VIP}/" in out

    def holders(self):
        return [h for h in LBS if self.has_vip(h)]

    def link(self, host, up):
        ip("-n", self.ns(host), "link", "set", "eth0", "up" if up else "down")

    def close(self):
        for host in self.hosts:
            remove_namespace(self.ns(host))
        remove_namespace(self.switch)


def alive_config(path, work, host, lock):
    ips = ", ".join(f'"{a}"' for a in ALBS)
    with open(path, "w") as f:
        f.write(f"""admin:
  socket: "{work}/{host}.sock"
  http: "off"
instances:
  - vip:
      vip: {VIP}
      interface: "eth0"
      name: "bench"
{lock}    ipvs:
      ips: [ {ips} ]
      ports:
        - port: {PORT}
          virtual_server_config: |
            delay_loop 1
            lb_algo rr
            lb_kind NAT
            protocol TCP
          raw_check: |
            TCP_CHECK {{
                connect_timeout 1
                connect_port 1936
            }}
""")
    return path


class AliveMode:
    """alive-proxy on both LB hosts; `lock` is the YAML under `vip:` for the mode."""

    def __init__(self, name, binaries, work, lock):
        self.name, self.binaries, self.work, self.lock = name, binaries, work, lock

    def start_lb(self, lab, host):
        conf = alive_config(f"{self.work}/{self.name}-{host}.yaml", self.work, host,
                            self.lock(host))
        argv = [self.binaries["alive-proxy"], "run", "--config", conf, "--drain-timeout", "8s",
                "--watch-interval", "0"]
        return [procs.start(lab.with_hostname(host, argv),
                            f"{self.work}/{self.name}-{host}.log")]

    def victim(self, started):
        """The process whose SIGTERM is the planned stop."""
        return started[0]


class KeepalivedMode:
    """The reference: keepalived's VRRP (unicast, advert_int 1) moves the VIP; HAProxy on
    each LB host (bound to 0.0.0.0, so it serves the VIP wherever it is) spreads over the
    ALB nodes with its own checks of port 1936. Equal priorities and `nopreempt`, like the
    alive-proxy VRRP mode's equal default priorities: a host whose link comes back stays
    backup, so no preemption moves the VIP (and cuts the long connections) between events."""

    name = "keepalived"

    def __init__(self, work):
        self.work = work

    def start_lb(self, lab, host):
        peer = [a for h, a in LBS.items() if h != host][0]
        servers = "\n".join(f"    server alb{i} {a}:{PORT} check port 1936 inter 1s"
                            for i, a in enumerate(ALBS))
        haproxy = f"{self.work}/haproxy-{host}.cfg"
        with open(haproxy, "w") as f:
            f.write(f"""global
    maxconn 2000
    pidfile {self.work}/haproxy-{host}.pid
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 0.0.0.0:{PORT}
    default_backend be
backend be
    balance roundrobin
{servers}
""")
        conf = f"{self.work}/keepalived-{host}.conf"
        with open(conf, "w") as f:
            f.write(f"""global_defs {{
    router_id {host}
}}
vrrp_instance bench {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    nopreempt
    advert_int 1
    unicast_src_ip {LBS[host]}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {VIP}/32 dev eth0
    }}
}}
""")
        hap = procs.start(lab.exec(host, ["haproxy", "-db", "-f", haproxy]),
                          f"{self.work}/haproxy-{host}.log")
        kad = procs.start(lab.exec(host, ["keepalived", "--vrrp", "-n", "-l", "-D", "-f", conf,
                                          "-p", f"{self.work}/keepalived-{host}.pid",
                                          "-r", f"{self.work}/keepalived-vrrp-{host}.pid"]),
                          f"{self.work}/keepalived-{host}.log")
        return [kad, hap]

    def victim(self, started):
        return started[0]


def start_world(lab, binaries, work):
    """ALB stand-ins, each with its health port."""
    for i, addr in enumerate(ALBS):
        host = f"alb{i + 1}"
        lab.add(host, addr)
        procs.start(lab.exec(host, [binaries["alive-backend"], "--listen", f"{addr}:{PORT}",
                                    "--health", f"{addr}:1936", "--name", host]),
                    f"{work}/{host}.log")
    lab.add("client", CLIENT)
    for host, addr in LBS.items():
        lab.add(host, addr)
    lab.add("lock", LOCK)


def start_etcd(lab, work):
    port = 2379
    data = f"{work}/etcd-data"
    url = f"http://{LOCK}:{port}"
    proc = procs.start(lab.exec("lock", [
        "etcd", "--name", "bench", "--data-dir", data, "--listen-client-urls", url,
        "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "bench=http://127.0.0.1:2380"]), f"{work}/etcd.log")
    wait_log(f"{work}/etcd.log", "ready to serve client requests", 20, proc)
    return url


def start_kube(lab, binaries, work):
    """The in-tree test API server; returns its admin kubeconfig."""
    log = f"{work}/fake_kube_api.log"
    proc = procs.start(lab.exec("lock", [binaries["fake_kube_api"], "--bind", f"{LOCK}:6443",
                                         "--dir", f"{work}/kube-pki"]), log)
    wait_log(log, "ready", 20, proc)
    with open(log) as f:
        for line in f:
            words = line.split()
            if len(words) == 4 and words[0] == "kubeconfig" and words[2] == "kubernetes-admin":
                return words[3]
    raise RuntimeError("fake_kube_api printed no admin kubeconfig")


def wait_log(path, text, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[4:6]} exited; see {path}")
        try:
            with open(path) as f:
                if text in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} not in {path} after {timeout}s")


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def outage(probes, event_at):
    """Longest run of failed probes after `event_at`: first failure → next success."""
    worst, streak_from = 0.0, None
    for at, ok in sorted(probes):
        if at < event_at:
            continue
        if not ok and streak_from is None:
            streak_from = at
        elif ok and streak_from is not None:
            worst = max(worst, at - streak_from)
            streak_from = None
    if streak_from is not None:
        worst = float("inf")
    return worst


def one_event(lab, mode, started, kind, work, client_seconds=9.0, lead=2.5):
    holders = lab.holders()
    if len(holders) != 1:
        raise RuntimeError(f"{mode.name}: VIP on {holders} before the event")
    victim = holders[0]
    client = subprocess.Popen(
        lab.exec("client", ["python3", CLIENT_SCRIPT, "--vip", VIP, "--port", str(PORT),
                            "--duration", str(client_seconds)]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    procs.STARTED.append(client)
    time.sleep(lead)
    event_at = time.time()
    if kind == "death":
        lab.link(victim, False)
    else:
        os.killpg(mode.victim(started[victim]).pid, signal.SIGTERM)
    out, _ = client.communicate(timeout=client_seconds + 30)
    procs.STARTED.remove(client)
    result = json.loads(out)
    longs = result["long"]
    alive_before = [c for c in longs if c["requests"] > 0 and
                    (c["failed_at"] is None or c["failed_at"] > event_at)]
    survived = [c for c in alive_before if c["failed_at"] is None]
    record = {"mode": mode.name, "event": kind, "victim": victim,
              "outage_s": outage(result["probes"], event_at),
              "probes": len(result["probes"]),
              "failed_probes": sum(1 for _, ok in result["probes"] if not ok),
              "long_connections": len(alive_before), "survived": len(survived),
              "loadavg": procs.loadavg()}
    # Restore: the victim comes back as a standby.
    if kind == "death":
        lab.link(victim, True)
    else:
        for proc in started[victim]:
            procs.stop(proc, timeout=20)
        started[victim] = mode.start_lb(lab, victim)
    wait_until(lambda: len(lab.holders()) == 1, 20, f"{mode.name}: one holder after restore")
    time.sleep(3.0)  # the returning host has read the lease / heard adverts
    procs.log(f"failover {mode.name:10} {kind:7} {victim}: outage {record['outage_s']:.3f} s, "
              f"{record['survived']}/{record['long_connections']} long connections survived")
    return record


def run_mode(mode_name, binaries, work, repeats, events):
    lab = Lab()
    try:
        start_world(lab, binaries, work)
        if mode_name == "keepalived":
            mode = KeepalivedMode(work)
        elif mode_name == "etcd":
            url = start_etcd(lab, work)
            mode = AliveMode("etcd", binaries, work,
                             lambda host: f'      etcd_lock:\n        endpoints: [ "{url}" ]\n')
        elif mode_name == "kube":
            kubeconfig = start_kube(lab, binaries, work)
            mode = AliveMode("kube", binaries, work,
                             lambda host: f'      kube_lock:\n        kubecfgs: [ "{kubeconfig}" ]\n')
        elif mode_name == "vrrp":
            mode = AliveMode("vrrp", binaries, work, lambda host: vrrp_lock(host))
        else:
            raise ValueError(f"unknown failover mode {mode_name}")
        started = {}
        for host in LBS:
            started[host] = mode.start_lb(lab, host)
            if host == "lb1":
                wait_until(lambda: lab.has_vip("lb1"), 30, f"{mode_name}: lb1 to hold the VIP")
        time.sleep(3.0)
        records = []
        for _ in range(repeats):
            for kind in events:
                records.append(one_event(lab, mode, started, kind, work))
        return records
    finally:
        for proc in list(procs.STARTED):
            if proc.args and any(lab.id in str(a) for a in proc.args):
                procs.stop(proc, timeout=10)
        lab.close()


def vrrp_lock(host):
    peer = [a for h, a in LBS.items() if h != host][0]
    return f'      id: 51\n      peer: [ "{peer}" ]\n'


def run(modes, binaries, work, repeats, events):
    records = []
    for mode in modes:
        procs.log(f"failover: mode {mode}")
        try:
            records += run_mode(mode, binaries, work, repeats, events)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            procs.log(f"failover: mode {mode} failed: {e}")
            records.append({"mode": mode, "error": str(e)})
    return records


def summarize(records):
    out = {}
    for r in records:
        if "error" in r:
            out.setdefault(f"{r['mode']}/error", {"error": r["error"]})
            continue
        key = f"{r['mode']}/{r['event']}"
        out.setdefault(key, {"outages": [], "survived": 0, "long": 0})
        out[key]["outages"].append(r["outage_s"])
        out[key]["survived"] += r["survived"]
        out[key]["long"] += r["long_connections"]
    for row in out.values():
        if "outages" in row and row["outages"]:
            row["median_s"] = statistics.median(row["outages"])
            row["min_s"], row["max_s"] = min(row["outages"]), max(row["outages"])
    return out
