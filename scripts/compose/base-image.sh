#!/usr/bin/env bash
# Prints the tag of a local Debian bookworm base image (`highway-ci/bookworm:KEY`),
# making it first when missing: a minbase root filesystem from debootstrap (Debian's
# mirror is the only network this needs), imported with `docker import`. Machines without
# a registry build the highway and Postgres images on it (`--build-arg BASE_IMAGE=...`).
#
# Cached under $HIGHWAY_COMPOSE_CACHE (default ~/.cache/highway-compose): the tarball and
# the image are keyed by the suite, mirror, package list and LAYOUT below, so a second
# run imports nothing and a changed package list builds a new one.
set -euo pipefail

SUITE=bookworm
MIRROR="${HIGHWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Extra packages of the root filesystem (comma-separated, as debootstrap takes them).
INCLUDE="ca-certificates"
# Bump when the steps below change, so cached tarballs and images are rebuilt.
LAYOUT=1
cache="${HIGHWAY_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/highway-compose}"

key=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" "$LAYOUT" | sha256sum | cut -c1-16)
tag="highway-ci/bookworm:$key"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

mkdir -p "$cache"
tarball="$cache/bookworm-$key.tar"
if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "base-image: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  # --one-file-system: never follow a /proc or /sys debootstrap failed to unmount.
  trap 'rm -rf --one-file-system "$rootfs" "$tarball.part"' EXIT
  mkdir -p "$cache/debs"
  echo "base-image: debootstrap $SUITE into $rootfs (a few minutes, once)" >&2
  debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$cache/debs" \
    "$SUITE" "$rootfs" "$MIRROR" >&2
  # Package lists and downloaded archives do not belong in an image.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
docker import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
echo "$tag"
