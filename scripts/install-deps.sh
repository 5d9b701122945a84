#!/usr/bin/env bash
# Installs what building and testing alive-proxy needs on a fresh Debian 12 host (run as root).
# Idempotent: packages already present are skipped by apt-get.
set -euo pipefail
packages=(
  build-essential pkg-config protobuf-compiler libprotobuf-dev  # etcd-client: protoc + well-known .protos
  iproute2 iputils-ping procps curl ca-certificates openssl
  nginx-light libnginx-mod-stream haproxy        # ALB stand-ins and side-by-side references
  etcd-server keepalived kubernetes-client       # lease backends' real peers, kubectl
  prometheus                                     # promtool checks /metrics
  tcpdump arping wrk
)
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
  # No init system runs here: keep maintainer scripts from starting the daemons they install.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
# The packaged daemons must not hold ports the tests use.
for d in nginx haproxy etcd prometheus keepalived; do pkill -x "$d" 2>/dev/null || true; done
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
