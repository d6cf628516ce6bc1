#!/usr/bin/env bash
# A second Docker daemon for the tests ("host B" of the many-hosts tests), beside the
# machine's, never touching it:
#
#   scripts/second-docker.sh start DIR [CERTS]   # prints the daemon's DOCKER_HOST (unix://DIR/docker.sock)
#   scripts/second-docker.sh stop DIR            # stops it (its containers with it) and removes DIR
#
# With CERTS (a scripts/test-certs.sh directory) the daemon also listens with
# --tlsverify on 127.0.0.1:2376 inside its network namespace (server.pem, clients
# must show a certificate signed by ca.pem), bridged out by socat to the unix socket
# DIR/docker-tls.sock: a test puts a TCP listener on host loopback in front of it.
#
# Everything of it lives under DIR: --data-root, --exec-root (its own containerd), the
# pidfile, the unix socket and the log. No bridge, no iptables, no masquerading: it
# changes nothing in the machine's network. It uses the machine daemon's storage driver.
# It runs in private mount and network namespaces. The mount namespace gives it an
# /etc/docker of its own, so it gets its own engine ID (Docker derives the ID from
# /etc/docker/key.json, and two hosts must not look like one). The network namespace
# keeps it off the machine's interfaces: a daemon started with --bridge=none deletes an
# existing `docker0` link at start, which in the machine's namespace would cut the
# machine daemon's containers off their bridge. The socket is a path, reachable from
# any network namespace. The test image is copied in from the machine's daemon
# with `docker save | docker load`.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
IMAGE="${HIGHWAY_TEST_IMAGE:-highway-test/busybox:1}"

stop() {
    local pid
    if [ -f "$dir/socat.pid" ]; then
        pid="$(cat "$dir/socat.pid")"
        # Only our own bridge: the pid must still be a socat serving our socket.
        if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$dir/docker-tls.sock"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
    if [ -f "$dir/dockerd.pid" ]; then
        pid="$(cat "$dir/dockerd.pid")"
        # Only our own daemon: the pid must still be a dockerd serving our socket.
        if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$dir/docker.sock"; then
            kill -TERM "$pid"
            for _ in $(seq 1 150); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$dir" 2>/dev/null || true
}

case "$cmd" in
stop)
    stop
    ;;
start)
    for bin in dockerd unshare; do
        command -v "$bin" >/dev/null || { echo "second-docker: $bin is not installed" >&2; exit 1; }
    done
    certs="${3:-}"
    tls_args=""
    if [ -n "$certs" ]; then
        for f in ca.pem server.pem server-key.pem; do
            [ -r "$certs/$f" ] || { echo "second-docker: $certs/$f is missing" >&2; exit 1; }
        done
        for bin in socat nsenter; do
            command -v "$bin" >/dev/null || { echo "second-docker: $bin is not installed" >&2; exit 1; }
        done
        tls_args="-H tcp://127.0.0.1:2376 --tlsverify --tlscacert $certs/ca.pem --tlscert $certs/server.pem --tlskey $certs/server-key.pem"
    fi
    driver="$(docker info --format '{{.Driver}}')"
    mkdir -p "$dir/etc-docker" "$dir/data" "$dir/exec"
    echo '{}' >"$dir/daemon.json"
    # setsid: the daemon outlives this script and is stopped by `stop` through its pidfile.
    # A new network namespace starts with loopback down: up, for the TLS listener.
    setsid unshare --mount --net --propagation private sh -c '
        ip link set lo up && mount --bind "$1/etc-docker" /etc/docker && exec dockerd \
            --data-root "$1/data" --exec-root "$1/exec" --pidfile "$1/dockerd.pid" \
            -H "unix://$1/docker.sock" --config-file "$1/daemon.json" \
            --bridge=none --iptables=false --ip-masq=false --storage-driver "$2" $3' \
        sh "$dir" "$driver" "$tls_args" </dev/null >"$dir/dockerd.log" 2>&1 &
    host="unix://$dir/docker.sock"
    for _ in $(seq 1 150); do
        DOCKER_HOST="$host" docker version >/dev/null 2>&1 && break
        sleep 0.2
    done
    if ! DOCKER_HOST="$host" docker version >/dev/null 2>&1; then
        echo "second-docker: the daemon did not come up; its log:" >&2
        tail -20 "$dir/dockerd.log" >&2 || true
        stop
        exit 1
    fi
    a="$(docker info --format '{{.ID}}')"
    b="$(DOCKER_HOST="$host" docker info --format '{{.ID}}')"
    if [ "$a" = "$b" ]; then
        echo "second-docker: the second daemon has the machine daemon's ID ($a)" >&2
        stop
        exit 1
    fi
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then
        docker save "$IMAGE" | DOCKER_HOST="$host" docker load >/dev/null
    fi
    if [ -n "$certs" ]; then
        # The TLS listener lives in the daemon's network namespace; the unix socket is a
        # path, reachable from the host's.
        pid="$(cat "$dir/dockerd.pid")"
        setsid nsenter --net="/proc/$pid/ns/net" socat \
            "UNIX-LISTEN:$dir/docker-tls.sock,fork,unlink-early" TCP:127.0.0.1:2376 \
            </dev/null >"$dir/socat.log" 2>&1 &
        echo $! >"$dir/socat.pid"
        for _ in $(seq 1 50); do
            [ -S "$dir/docker-tls.sock" ] && break
            sleep 0.1
        done
        if [ ! -S "$dir/docker-tls.sock" ]; then
            echo "second-docker: the TLS bridge did not come up; its log:" >&2
            cat "$dir/socat.log" >&2 || true
            stop
            exit 1
        fi
    fi
    echo "$host"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
