#!/usr/bin/env bash
# Installs what alive-proxy needs on Debian 12 (run as root), for one purpose:
#   bash scripts/install-deps.sh build   # `cargo build`: a C compiler (ring) and protoc with
#                                        # the well-known .protos (etcd-client's build script)
#   bash scripts/install-deps.sh demo    # build + curl: what scripts/demo.sh needs
#   bash scripts/install-deps.sh test    # (default) demo + the test world: real peers,
#                                        # references and tools the tests start themselves
# Idempotent: installed packages are skipped.
#
# It starts no daemon and stops none, by name or otherwise. apt is kept from starting the
# daemons it installs (policy-rc.d), and on a systemd host those units, installed here just
# now, are not enabled for the next boot either. A packaged nginx, HAProxy, etcd, Prometheus
# or keepalived that already runs is left alone: the tests start their own instances on
# ports and in network namespaces of their own, never on a daemon's default port.
set -euo pipefail
purpose="${1:-test}"
build=(
  gcc libc6-dev ca-certificates                  # linking; ring's C and assembly
  protobuf-compiler libprotobuf-dev              # etcd-client: protoc + google/protobuf/*.proto
)
demo=(curl)
test_world=(
  iproute2 iputils-ping procps openssl nftables  # nft: the handover's forwarding (src/ha/forward.rs)
  nginx-light libnginx-mod-stream haproxy        # ALB stand-ins and side-by-side references
  etcd-server keepalived kubernetes-client       # lease backends' real peers, kubectl
  prometheus                                     # promtool checks /metrics
  tcpdump arping wrk
  debootstrap                                    # the Docker image test's base image (no registry)
  bird2                                          # BGP mode's routing daemon (docs/bgp.md, tests/ha_bgp.rs)
)
# Units of the daemons above, kept from starting at boot when this script installs them.
daemon_units=(nginx haproxy etcd prometheus keepalived bird)
case "$purpose" in
  build) packages=("${build[@]}") ;;
  demo) packages=("${build[@]}" "${demo[@]}") ;;
  test) packages=("${build[@]}" "${demo[@]}" "${test_world[@]}") ;;
  *) echo "usage: scripts/install-deps.sh [build|demo|test]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && continue
  # Some images ship kubectl from another package; any kubectl will do.
  [ "$p" = kubernetes-client ] && command -v kubectl >/dev/null && continue
  missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Keep maintainer scripts from starting the daemons they install (invoke-rc.d and
  # deb-systemd-invoke both ask policy-rc.d). An existing policy is left as it is.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  if [ -d /run/systemd/system ]; then
    for unit in "${daemon_units[@]}"; do
      for p in "${missing[@]}"; do
        # Only units of packages installed just now: an operator's own choices stay.
        case "$p" in "$unit"|"$unit"-*|"$unit"2) systemctl disable --quiet "$unit" 2>/dev/null || true ;; esac
      done
    done
  fi
fi
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
