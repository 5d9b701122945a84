#!/usr/bin/env bash
# Packages an alive-proxy binary built on this host into the image docker/Dockerfile
# describes, without compiling inside Docker: for air-gapped sites and for the tests.
#
#   docker/package.sh [--runtime-image IMAGE] [--strip] BINARY TAG
#
# The image is docker/Dockerfile's `runtime-base` stage (labels, volume, entrypoint, stop
# signal) plus BINARY as /usr/local/bin/alive-proxy. IMAGE defaults to the Dockerfile's
# RUNTIME_IMAGE; its glibc must be at least as new as the one BINARY was linked against
# (build on Debian 12 for debian:bookworm-slim). --strip drops debug info from the copy.
# Prints the image's ID.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build_args=()
strip_debug=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime-image) build_args+=(--build-arg "RUNTIME_IMAGE=$2"); shift 2 ;;
    --strip) strip_debug=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "package.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: docker/package.sh [--runtime-image IMAGE] [--strip] BINARY TAG" >&2; exit 2; }
binary="$1"
tag="$2"
[ -x "$binary" ] || { echo "package.sh: $binary is not an executable file" >&2; exit 1; }
version="$("$binary" version | awk '{print $2}')"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
# The runtime-base stage copies nothing, so an empty context suffices; it is built on its
# own because the legacy builder would also build every stage before a later --target.
base="$(docker build -q -f "$here/Dockerfile" --target runtime-base "${build_args[@]}" "$context")"
if [ -n "$strip_debug" ]; then
  strip --strip-debug -o "$context/alive-proxy" "$binary"
else
  cp "$binary" "$context/alive-proxy"
fi
printf 'FROM %s\nCOPY alive-proxy /usr/local/bin/alive-proxy\n' "$base" \
  | docker build -q -t "$tag" --label "org.opencontainers.image.version=$version" -f - "$context"
