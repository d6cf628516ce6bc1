#!/usr/bin/env bash
# Builds the offline test image `highway-test/busybox:1` (static busybox, no registry).
#
# Idempotent: the image carries a content label (sha256 of busybox + this layout
# version); when an image with that label already exists nothing is rebuilt.
#
# Trap 30 (DOCKER-NOTES.md): never run `busybox --install` on the host; without `-s DIR`
# it hard-links every applet into the running system's /bin and /usr/bin. The applet
# symlinks are made by hand inside the rootfs directory instead.
set -euo pipefail

IMAGE="${HIGHWAY_TEST_IMAGE:-highway-test/busybox:1}"
# Bump when the rootfs layout below changes, so existing images are rebuilt.
LAYOUT_VERSION=2
LABEL_KEY="dev.highway-test.content"
BUSYBOX=/bin/busybox

if ! docker version >/dev/null 2>&1; then
    echo "build-test-image: the Docker daemon is not reachable (docker version failed)" >&2
    exit 1
fi

if [ ! -x "$BUSYBOX" ]; then
    echo "build-test-image: installing busybox-static" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >/dev/null
fi
if [ ! -x "$BUSYBOX" ]; then
    echo "build-test-image: $BUSYBOX missing after installing busybox-static" >&2
    exit 1
fi

content="$( (sha256sum "$BUSYBOX" | cut -d' ' -f1; echo "layout=$LAYOUT_VERSION") | sha256sum | cut -d' ' -f1)"
existing="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$IMAGE" 2>/dev/null || true)"
if [ "$existing" = "$content" ]; then
    echo "build-test-image: $IMAGE is up to date ($content)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/in" "$root/out" "$root/root" "$root/work"
cp "$BUSYBOX" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# `busybox --list` only prints applet names; it never touches the host file system.
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] && continue
    ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
# Inputs/outputs land here; writable by any run uid (tests also run as 65534).
chmod 0777 "$root/in" "$root/out" "$root/work"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/bin' \
        --change "LABEL $LABEL_KEY=$content" \
        - "$IMAGE" >/dev/null

got="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$IMAGE")"
if [ "$got" != "$content" ]; then
    echo "build-test-image: imported $IMAGE but its content label is '$got', want '$content'" >&2
    exit 1
fi
echo "build-test-image: built $IMAGE ($content)"
