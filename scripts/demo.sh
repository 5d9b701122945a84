#!/usr/bin/env bash
# The README's first command: alive-proxy serving real traffic on this machine alone.
# Three ALB stand-ins (alive-backend) on 127.0.0.11-13:8080 with health on :1936, and
# alive-proxy on the VIP 127.0.0.10:8080 from examples/demo.yaml (no lock: single-host
# mode). Shows the backends taking turns, then keeps serving until Ctrl-C
# (`--once` stops after the show).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked --bins
bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for n in 1 2 3; do
  "$bin/alive-backend" --name "alb-$n" --listen "127.0.0.1$n:8080" --health "127.0.0.1$n:1936" &
  pids+=($!)
done
"$bin/alive-proxy" check -c examples/demo.yaml
"$bin/alive-proxy" run -c examples/demo.yaml &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.10:8080/ && break; sleep 0.1; done
echo "--- six requests through the VIP 127.0.0.10:8080 (rr):"
for _ in $(seq 6); do curl -s http://127.0.0.10:8080/; done
echo "--- alive-proxy stats:"
"$bin/alive-proxy" stats || true
if [ "${1:-}" = "--once" ]; then exit 0; fi
echo "--- serving; try: curl http://127.0.0.10:8080/ ; alive-proxy stats --watch ; Ctrl-C stops"
wait
