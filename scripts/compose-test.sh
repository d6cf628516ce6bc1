#!/usr/bin/env bash
# The compose stack, actually run: builds the images on a machine without a registry,
# starts docker-compose.yml under a project name of its own, waits for the worker's
# /health/ready (and its HEALTHCHECK), runs a `tools.docker.run` of the test image
# through the composed worker's API and the mounted Docker socket, then stops the stack
# with `down -v` and fails if any container, network or volume of the project, or any
# container of its deployment, is left. scripts/test.sh runs it after a full run.
#
# Images, all local (nothing is pulled):
#   - a Debian bookworm base from debootstrap (scripts/compose/base-image.sh), the
#     BASE_IMAGE of both Dockerfiles;
#   - Postgres 15 from Debian's packages (scripts/compose/postgres.Dockerfile);
#   - the Dockerfile's `runtime` target plus the binary built on the host (the machine
#     has no Rust image to build it in).
# Each is tagged by a hash of what it is made from and reused when present, so a second
# run builds only the per-run worker layer. HIGHWAY_COMPOSE_CACHE holds the debootstrap
# tarball (default ~/.cache/highway-compose).
#
# Only this run's resources are touched: the machine's daemon is shared.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
  compose_bin=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_bin=(docker-compose)
else
  echo "compose-test: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
# Without the buildx plugin, newer docker CLIs refuse BuildKit builds; the Dockerfiles
# work with the classic builder as well.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
for tool in curl openssl; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "compose-test: $tool is needed" >&2
    exit 1
  }
done

project="highway-ci-$$"
work=$(mktemp -d /tmp/highway-compose.XXXXXX)
worker_image="highway-ci/worker:$project"
env_file="$work/env"
compose() { "${compose_bin[@]}" --env-file "$env_file" -p "$project" -f docker-compose.yml "$@"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
# docker build, quiet unless it fails (the classic builder's deprecation notice included).
build() { docker build -q "$@" >/dev/null 2>"$work/build.log" || {
  cat "$work/build.log" >&2
  return 1
}; }
t0=$(date +%s)
step() { echo "compose-test [$(($(date +%s) - t0))s]: $*"; }

# ---------------------------------------------------------------- images
step "base image"
base=$(scripts/compose/base-image.sh)
gid=$(stat -c %g /var/run/docker.sock)

pg_key=$(printf '%s\n' "$base" | hash_of - scripts/compose/postgres.Dockerfile scripts/compose/postgres-entrypoint.sh)
pg_image="highway-ci/postgres:15-$pg_key"
if ! docker image inspect "$pg_image" >/dev/null 2>&1; then
  step "building $pg_image"
  build --build-arg BASE_IMAGE="$base" -t "$pg_image" \
    -f scripts/compose/postgres.Dockerfile scripts/compose
fi

rt_key=$(printf '%s\n' "$base" "$gid" | hash_of - Dockerfile .dockerignore)
rt_image="highway-ci/worker-runtime:$rt_key"
if ! docker image inspect "$rt_image" >/dev/null 2>&1; then
  step "building $rt_image (Dockerfile target runtime, DOCKER_GID=$gid)"
  build --target runtime --build-arg BASE_IMAGE="$base" \
    --build-arg DOCKER_GID="$gid" -t "$rt_image" .
fi

step "building the highway binary on the host"
cargo build -q --locked -p highway-worker --bin highway
mkdir -p "$work/ctx"
cp target/debug/highway "$work/ctx/highway"
printf 'FROM %s\nCOPY highway /usr/local/bin/highway\n' "$rt_image" >"$work/ctx/Dockerfile"
build -t "$worker_image" "$work/ctx"
rm -rf "$work/ctx"

# ---------------------------------------------------------------- the stack
# The env file docker-compose.yml reads, as an operator's `.env` would be (0600: it
# holds the database password and the secrets key).
umask 077
cat >"$env_file" <<EOF
HIGHWAY_POSTGRES_PASSWORD=$(openssl rand -hex 16)
HIGHWAY_SECRETS_KEY=$(openssl rand -hex 32)
DOCKER_GID=$gid
HIGHWAY_POSTGRES_IMAGE=$pg_image
HIGHWAY_WORKER_IMAGE=$worker_image
HIGHWAY_API_PUBLISH=127.0.0.1:
EOF
umask 022

deployment=""
started=0
stopped=0
# Stops the project and checks nothing of it is left. Runs once: at the end, or on the
# way out of a failure.
stop_stack() {
  [ "$stopped" = 1 ] && return 0
  stopped=1
  if [ "$started" = 0 ]; then
    docker rmi "$worker_image" >/dev/null 2>&1 || true
    return 0
  fi
  local left=0
  if [ -z "$deployment" ]; then
    deployment=$(compose exec -T postgres psql -U highway -d highway -Atc \
      "SELECT value FROM highway.settings WHERE name = 'deployment_id'" 2>/dev/null | tr -d '\r' || true)
  fi
  step "docker compose down -v"
  compose down -v --remove-orphans --timeout 60 >/dev/null 2>"$work/down.log" || {
    cat "$work/down.log" >&2
    left=1
  }
  local label="label=com.docker.compose.project=$project"
  local rest
  rest="$(docker ps -aq --filter "$label")$(docker network ls -q --filter "$label")$(docker volume ls -q --filter "$label")"
  if [ -n "$rest" ]; then
    echo "compose-test: left behind by project $project:" >&2
    docker ps -a --filter "$label" >&2
    docker network ls --filter "$label" >&2
    docker volume ls --filter "$label" >&2
    left=1
  fi
  if [ -n "$deployment" ]; then
    rest=$(docker ps -aq --filter label=highway.managed=true --filter "label=highway.deployment_id=$deployment")
    if [ -n "$rest" ]; then
      echo "compose-test: containers of deployment $deployment left: $rest" >&2
      left=1
    fi
  else
    echo "compose-test: the deployment identity was never read" >&2
    left=1
  fi
  docker rmi "$worker_image" >/dev/null 2>&1 || true
  return "$left"
}
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ "$started" = 1 ] && [ "$stopped" = 0 ]; then
    echo "compose-test: failed; the stack's last log lines:" >&2
    compose logs --no-color --tail 40 >&2 2>/dev/null || true
  fi
  stop_stack || rc=1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

step "docker compose up (project $project)"
started=1
compose up -d --no-build
api=$(compose port worker 8080 | tr -d '\r')
case "$api" in
127.0.0.1:*) ;;
*)
  echo "compose-test: the API is published on '$api', not on loopback only" >&2
  exit 1
  ;;
esac

step "waiting for /health/ready on $api"
deadline=$(($(date +%s) + 180))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$api/health/ready")" = 200 ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "compose-test: /health/ready never answered 200:" >&2
    curl -s "http://$api/health/ready" >&2 || true
    exit 1
  fi
  sleep 1
done
curl -sf "http://$api/health/live" >/dev/null
# The image's HEALTHCHECK (highway health --ready) agrees.
worker_container=$(compose ps -q worker | tr -d '\r')
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$worker_container")" = healthy ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "compose-test: the worker container never became healthy" >&2
    exit 1
  fi
  sleep 1
done
user=$(docker inspect -f '{{.Config.User}}' "$worker_container")
if [ -z "$user" ] || [ "$user" = root ] || [ "$user" = 0 ]; then
  echo "compose-test: the worker runs as root" >&2
  exit 1
fi
deployment=$(compose exec -T postgres psql -U highway -d highway -Atc \
  "SELECT value FROM highway.settings WHERE name = 'deployment_id'" | tr -d '\r')
[ -n "$deployment" ] || {
  echo "compose-test: no deployment identity in the composed database" >&2
  exit 1
}

step "tools.docker.run through the composed worker"
# The token goes to curl in a header file, never on a command line.
token=$(compose exec -T worker highway bootstrap-token --name compose-test 2>/dev/null | tr -d '\r')
(umask 077 && printf 'Authorization: Bearer %s\n' "$token" >"$work/auth")
unset token
marker="compose-test-$$"
body=$(printf '{"kind":"tools.docker.run","params":{"image":"highway-test/busybox:1","pull_policy":"never","command":["echo","%s"]}}' "$marker")
answer=$(curl -sf -H @"$work/auth" -H 'Content-Type: application/json' -d "$body" "http://$api/v1/activities")
id=$(printf '%s' "$answer" | sed -n 's/.*"id":"\([0-9a-f-]\{36\}\)".*/\1/p' | head -1)
[ -n "$id" ] || {
  echo "compose-test: enqueue answered: $answer" >&2
  exit 1
}
deadline=$(($(date +%s) + 120))
while :; do
  activity=$(curl -sf -H @"$work/auth" "http://$api/v1/activities/$id")
  case "$activity" in
  *'"status":"succeeded"'*) break ;;
  *'"status":"failed"'* | *'"status":"cancelled"'*)
    echo "compose-test: the activity ended: $activity" >&2
    exit 1
    ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "compose-test: the activity did not finish: $activity" >&2
    exit 1
  fi
  sleep 1
done
case "$activity" in
*'"exit_code":0'*) ;;
*)
  echo "compose-test: no exit code 0 in the result: $activity" >&2
  exit 1
  ;;
esac
logs=$(curl -sf -H @"$work/auth" "http://$api/v1/activities/$id/logs")
case "$logs" in
*"$marker"*) ;;
*)
  echo "compose-test: the container's output is not in its logs: $logs" >&2
  exit 1
  ;;
esac

stop_stack
step "ok: the stack ran a container and left nothing behind"
