"""The load-test harness behind `loadtest/bench.py`: alive-proxy measured against direct,
HAProxy and nginx stream on one machine (closed-loop rates, latency at fixed rates, memory
per idle connection), VIP failover measured against keepalived in network namespaces, and
a mode that measures an existing deployment. Python 3 standard library only.

Modules: procs (processes, CPU, memory), arms (the proxies and the backend), closed
(wrk workloads), latency (alive-load at fixed rates), memory (idle connections), failover
(network namespaces), remote (real ALB nodes), report (JSON, markdown, SVG plots).
"""
