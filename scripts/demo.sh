#!/usr/bin/env bash
# The README's first command: alive-proxy serving real traffic on this machine alone.
# Three ALB stand-ins (alive-backend) on 127.0.0.11-13:8080 with health on :1936, and
# alive-proxy on the VIP 127.0.0.10:8080 from examples/demo.yaml (no lock: single-host
# mode; its own admin socket and metrics port). Shows the backends taking turns, then keeps
# serving until Ctrl-C (`--once` stops after the show).
#
# Safe on an LB host: it installs only what building and the demo need (a C compiler,
# protoc, curl), touches only loopback addresses nothing else uses, refuses to start if
# one of its addresses is taken, and stops only the processes it started itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
cargo build --release --locked --bins
bin=target/release
config=examples/demo.yaml
socket=/run/alive-proxy-demo/admin.sock

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
for addr in 127.0.0.10:8080 127.0.0.11:8080 127.0.0.12:8080 127.0.0.13:8080 \
            127.0.0.11:1936 127.0.0.12:1936 127.0.0.13:1936 127.0.0.1:9737; do
  if listening "${addr%:*}" "${addr#*:}"; then
    echo "demo: something already listens on $addr; not starting (stop that first)" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  # Only what this script started: SIGTERM lets alive-proxy remove its VIP from lo.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for n in 1 2 3; do
  "$bin/alive-backend" --name "alb-$n" --listen "127.0.0.1$n:8080" --health "127.0.0.1$n:1936" &
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 50); do listening "127.0.0.1$n" 8080 && break; sleep 0.1; done
  listening "127.0.0.1$n" 8080 || { echo "demo: backend alb-$n did not start" >&2; exit 1; }
done
"$bin/alive-proxy" check -c "$config"
"$bin/alive-proxy" run -c "$config" &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.10:8080/ && break; sleep 0.1; done
echo "--- six requests through the VIP 127.0.0.10:8080 (rr):"
for _ in $(seq 6); do curl -s http://127.0.0.10:8080/; done
echo "--- alive-proxy stats --socket $socket:"
"$bin/alive-proxy" stats --socket "$socket" || true
echo "--- metrics: curl http://127.0.0.1:9737/metrics"
if [ "${1:-}" = "--once" ]; then exit 0; fi
echo "--- serving; try: curl http://127.0.0.10:8080/ ;" \
  "$bin/alive-proxy stats --socket $socket --watch ; Ctrl-C stops"
wait "${pids[-1]}"
