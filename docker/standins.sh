#!/bin/sh
# Local stand-ins for the images docker-compose.yml pulls from Docker Hub, for machines that cannot
# reach it: a Debian bookworm base with Python 3 and its venv module (debootstrap, then docker
# import), and PostgreSQL and Redis images built on it from Debian's packages, which keep the
# contract the compose file uses (docker/standins/*.Dockerfile). Prints the variables that point
# the compose file at them:
#
#   eval "$(docker/standins.sh)"      # BASE_IMAGE=... POSTGRES_IMAGE=... REDIS_IMAGE=...
#
# MIRROR: the Debian mirror (default: the first one in this machine's apt sources). An image that
# exists already is kept (FORCE=1 rebuilds). Needs root (debootstrap) and a running Docker engine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${STANDIN_PREFIX:-wiki-image-topics-standin}
base="$prefix/bookworm-python:12"
postgres="$prefix/postgres:15"
redis="$prefix/redis:7"
mirror=${MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
                      2>/dev/null | grep -v '^ *#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ')}
mirror=${mirror:-http://deb.debian.org/debian}

have() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$base"; then
    command -v debootstrap >/dev/null || { echo "standins: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "standins: debootstrap bookworm from $mirror" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >&2
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" > "$root/etc/apt/sources.list"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$base" >&2
fi
if ! have "$postgres"; then
    docker build --network host --build-arg BASE_IMAGE="$base" -f "$here/standins/postgres.Dockerfile" \
        -t "$postgres" "$here/standins" >&2
fi
if ! have "$redis"; then
    docker build --network host --build-arg BASE_IMAGE="$base" -f "$here/standins/redis.Dockerfile" \
        -t "$redis" "$here/standins" >&2
fi
echo "BASE_IMAGE=$base POSTGRES_IMAGE=$postgres REDIS_IMAGE=$redis"
