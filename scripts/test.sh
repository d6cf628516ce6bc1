#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need (PostgreSQL server
# binaries, busybox-static for the test image, docker-registry for pull tests, openssl,
# socat and htpasswd for the TLS tests, chromium and chromedriver for the console's
# browser tests), makes this run's test certificates, starts a
# private Postgres cluster in a temp dir, builds the offline test image, starts a second
# Docker daemon of its own (scripts/second-docker.sh), runs every test of the workspace,
# and stops the daemon and the cluster. Extra arguments go to `cargo test`.
#
# Docker tests never skip: with the daemon unreachable they fail saying so. People
# without Docker may set HIGHWAY_TEST_NO_DOCKER=1 to run only the rest (CI never does).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
dpkg -s docker-registry >/dev/null 2>&1 || need+=(docker-registry)
# TLS tests: certificates made per run, socat to bridge into the second daemon's namespace,
# htpasswd for the registry's basic auth.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
# `ip` brings up loopback inside the second daemon's network namespace (its TLS listener).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The compose test builds its base image with debootstrap and talks to the API with curl.
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The web console's browser tests (tests/it/ui.rs): headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  # The Debian package would create and start a system cluster on port 5432: we only
  # want the binaries.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run on the machine holds the lock for a while: wait for it.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "${HIGHWAY_TEST_NO_DOCKER:-}" != "1" ]; then
  if ! timeout 20 docker info >/dev/null 2>&1; then
    echo "error: the Docker daemon is unreachable (docker info failed)." >&2
    echo "The docker tests need it; set HIGHWAY_TEST_NO_DOCKER=1 to run only the others." >&2
    exit 1
  fi
  scripts/build-test-image.sh
fi

cargo build -q -p highway-worker --bin highway
state=$(mktemp -d /tmp/highway-test.XXXXXX)
cleanup() {
  if [ -n "${HIGHWAY_TEST_DOCKER_B_HOST:-}" ]; then
    scripts/second-docker.sh stop "$state/docker-b" || true
  fi
  target/debug/highway --state-dir "$state" postgres stop >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
url=$(target/debug/highway --state-dir "$state" postgres start)
export HIGHWAY_TEST_DATABASE_URL="${url%/*}/postgres"
export HIGHWAY_TEST_STATE_DIR="$state"
# A CA, server and client certificates of this run only (scripts/test-certs.sh).
scripts/test-certs.sh "$state/certs"
export HIGHWAY_TEST_CERTS_DIR="$state/certs"
# "Host B" of the many-hosts tests: a second Docker daemon of our own, stopped by
# `cleanup` (on failure too). The machine's daemon is never touched.
if [ "${HIGHWAY_TEST_NO_DOCKER:-}" != "1" ]; then
  # With the certificates it also serves TLS (--tlsverify), bridged to a unix socket.
  HIGHWAY_TEST_DOCKER_B_HOST=$(scripts/second-docker.sh start "$state/docker-b" "$state/certs")
  export HIGHWAY_TEST_DOCKER_B_HOST
  export HIGHWAY_TEST_DOCKER_B_TLS_SOCK="$state/docker-b/docker-tls.sock"
fi
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --workspace "$@"

# The API fuzzed against its own OpenAPI document (scripts/schemathesis.sh, about two
# minutes), after a full run (no arguments, as CI runs it); a targeted run such as
# `scripts/test.sh -p highway-tests -- api::` skips it. HIGHWAY_TEST_NO_SCHEMATHESIS=1
# skips it too (CI never sets it).
if [ "$#" -eq 0 ] && [ "${HIGHWAY_TEST_NO_SCHEMATHESIS:-}" != "1" ]; then
  scripts/schemathesis.sh
fi

# docker-compose.yml run for real (scripts/compose-test.sh: local base and Postgres images,
# the stack under its own project name, a tools.docker.run through it, nothing left),
# after a full run like schemathesis. HIGHWAY_TEST_NO_COMPOSE=1 skips it (CI never sets it).
if [ "$#" -eq 0 ] && [ "${HIGHWAY_TEST_NO_COMPOSE:-}" != "1" ] && [ "${HIGHWAY_TEST_NO_DOCKER:-}" != "1" ]; then
  scripts/compose-test.sh
fi
