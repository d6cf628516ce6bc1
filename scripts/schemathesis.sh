#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis: the server
# must never answer 5xx, every status it answers must be documented for the operation,
# and every answer must match its documented schema. Exits non-zero on any failure.
#
# Installs schemathesis from PyPI into a private venv (target/schemathesis-venv, reused
# while the version matches), builds `highway`, and starts `highway up` with its own
# private Postgres cluster in a temp state dir on a free loopback port. The worker
# claims from a queue nothing is enqueued to, so fuzzed activities never run, and its
# garbage collector only sees its own deployment's containers. Runs once with the admin
# token `highway up` writes and once with a tenant token from `highway token create`.
# The server has a secrets key of this run only, so `/v1/secrets` and `/v1/registries` are
# fuzzed for real instead of answering that the store is off.
#
# HIGHWAY_SCHEMATHESIS_EXAMPLES (default 10): most test cases per operation and token.
# HIGHWAY_SCHEMATHESIS_ARGS: more arguments for `schemathesis run` (e.g. `--report har`).
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv="$PWD/target/schemathesis-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "version $version"; then
  echo "installing schemathesis $version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi

cargo build -q -p highway-worker --bin highway
bin=target/debug/highway
state=$(mktemp -d /tmp/highway-schemathesis.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
up_pid=""
cleanup() {
  if [ -n "$up_pid" ]; then
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT

# No DATABASE_URL: `highway up` runs its own cluster under the state dir.
env -u DATABASE_URL -u HIGHWAY_TOKEN -u HIGHWAY_TOKEN_FILE \
  HIGHWAY_QUEUES="schemathesis-unclaimed" \
  HIGHWAY_DEPLOYMENT="schemathesis-$$" \
  HIGHWAY_SECRETS_KEY="$(openssl rand -hex 32)" \
  RUST_LOG="${RUST_LOG:-warn}" \
  "$bin" --state-dir "$state" up --listen "127.0.0.1:$port" >"$state/up.out" 2>"$state/up.log" &
up_pid=$!
for _ in $(seq 1 120); do
  if [ -s "$state/admin.token" ] && curl -fs "$base/health" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "error: highway up exited; its log:" >&2
    cat "$state/up.log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fs "$base/health" >/dev/null || { echo "error: highway up did not answer /health" >&2; cat "$state/up.log" >&2; exit 1; }
admin=$(cat "$state/admin.token")
tenant=$(env -u DATABASE_URL "$bin" --state-dir "$state" token create --tenant fuzz --name schemathesis)

examples="${HIGHWAY_SCHEMATHESIS_EXAMPLES:-10}"
rc=0
for who in admin tenant; do
  token=$admin
  [ "$who" = tenant ] && token=$tenant
  echo "== schemathesis ($who token, at most $examples cases per operation)"
  # Bounded: a stalled run fails here instead of holding CI. Run from the state dir,
  # where schemathesis keeps its cache of earlier failures, so nothing is left in the
  # work tree and every run starts fresh. One worker: with two threads, hypothesis'
  # lambda descriptions call ast.parse concurrently, which CPython 3.11 can fail with
  # "SystemError: AST constructor recursion depth mismatch" (a tool error, not ours).
  (cd "$state" && timeout 300 "$venv/bin/schemathesis" run "$base/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    -H "Authorization: Bearer $token" \
    --max-examples "$examples" \
    --phases examples,coverage,fuzzing \
    --seed 1 \
    --workers 1 \
    --request-timeout 20 \
    --suppress-health-check all \
    --generation-database none \
    --no-color \
    --output-sanitize true ${HIGHWAY_SCHEMATHESIS_ARGS:-}) || rc=1
done
if [ "$rc" != 0 ]; then
  echo "schemathesis found failures (server log: kept below)" >&2
  grep -iE "error|panic" "$state/up.log" | tail -20 >&2 || true
fi
exit "$rc"
