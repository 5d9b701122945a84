#!/usr/bin/env bash
# Makes a Debian base image without a registry: debootstrap's minimal variant (from
# deb.debian.org or --mirror), trimmed of apt caches, documentation and locales, and
# imported as TAG.
# For machines that cannot pull (the test machines, air-gapped sites); run as root.
#
#   docker/base-image.sh [--suite bookworm] [--mirror URL] TAG
#
# Use the result as RUNTIME_IMAGE: docker/package.sh --runtime-image TAG BINARY IMAGE.
set -euo pipefail
suite=bookworm
mirror=http://deb.debian.org/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "base-image.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: docker/base-image.sh [--suite SUITE] [--mirror URL] TAG" >&2; exit 2; }
tag="$1"
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# nftables: a new VIP holder forwards a planned handover's sessions with `nft` (src/ha/forward.rs).
debootstrap --variant=minbase --include=nftables "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { cat "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
tar -C "$root" -c \
  --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/cache/apt/*.bin' \
  --exclude='./var/lib/apt/lists/*' --exclude='./usr/share/doc/*' \
  --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' --exclude='./usr/share/info/*' \
  . | docker import - "$tag"
