#!/usr/bin/env bash
# Build the app image with podman on a machine that reaches no image registry (as CI's here):
# a Debian bookworm base made with debootstrap (once, then kept as $RAG_BASE_IMAGE), then the
# Dockerfile on top of it. Where a registry is reachable, `docker build -t rag .` is all you need.
#
#   bash scripts/container-build.sh [IMAGE]          IMAGE defaults to localhost/rag:latest
#
# Environment (all optional):
#   CONTAINERS_CONF  podman's settings; when unset, one that works here is written and used
#                    (runc, since crun fails on this kernel's mixed cgroups; ulimits the host allows).
#                    Export the same file for later podman commands: the script prints it.
#   RAG_BASE_IMAGE   the base to build on (default localhost/rag-base:bookworm, made here if missing;
#                    python:3.11-slim where a registry is reachable)
#   DEBIAN_MIRROR    for debootstrap (default: the mirror apt uses on this machine)
#   WHEELS_DIR       a folder of wheels pip looks in before PyPI (default: none; the image
#                    installs requirements.lock only, which has no torch)
#   CA_CERTS_DIR     the CA bundle pip must trust (default /etc/ssl/certs), mounted into the build
#   RAG_WORK_DIR     scratch folder (default /tmp/rag-container)
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-localhost/rag:latest}
base=${RAG_BASE_IMAGE:-localhost/rag-base:bookworm}
work=${RAG_WORK_DIR:-/tmp/rag-container}
certs=${CA_CERTS_DIR:-/etc/ssl/certs}
wheels=${WHEELS_DIR:-}
mkdir -p "$work"

command -v podman >/dev/null || { echo "container-build: podman is not installed" >&2; exit 1; }

if [ -z "${CONTAINERS_CONF:-}" ]; then
    export CONTAINERS_CONF="$work/containers.conf"
    cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
fi
echo "container-build: CONTAINERS_CONF=$CONTAINERS_CONF"

debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

if ! podman image exists "$base"; then
    case "$base" in
    localhost/*) ;;
    *) echo "container-build: base image $base is missing and no registry is reachable" >&2; exit 1 ;;
    esac
    command -v debootstrap >/dev/null || { echo "container-build: needs debootstrap" >&2; exit 1; }
    mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
    rootfs="$work/rootfs"
    rm -rf "$rootfs"
    echo "container-build: debootstrap bookworm from $mirror (about 30 s)"
    start=$SECONDS
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | podman import --quiet - localhost/debian-minbase:bookworm >/dev/null
    rm -rf "$rootfs"
    # What python:3.11-slim gives: Python 3.11 with venv, and the CA bundle for HTTPS at run time.
    podman build --format docker --tag "$base" --file - "$work" <<'EOF'
FROM localhost/debian-minbase:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
EOF
    echo "container-build: base image $base built in $((SECONDS - start)) s"
fi

args=(--format docker --tag "$image" --build-arg "BASE_IMAGE=$base")
if [ -d "$certs" ]; then args+=(--volume "$certs:/etc/ssl/certs:ro"); fi
if [ -n "$wheels" ]; then
    args+=(--volume "$wheels:/wheels:ro" --build-arg FIND_LINKS=/wheels)
fi
echo "container-build: podman build ${args[*]} ."
start=$SECONDS
podman build "${args[@]}" .
echo "container-build: $image built in $((SECONDS - start)) s"
