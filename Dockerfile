# The highway worker image. Stages, in this order because Docker's classic builder runs
# every stage up to the target:
#   runtime  the Debian base with certificates and the non-root user; no binary. Offline
#            machines put a binary built on the host on top of it
#            (scripts/compose-test.sh does that).
#   deps     the dependencies alone, compiled against stub sources: this layer is
#            cached until Cargo.toml or Cargo.lock change.
#   build    the real sources on top (`cargo build --locked`).
#   (last)   runtime + the built binary: what `docker build .` and compose produce.
#
# Build arguments:
#   DOCKER_GID  group id of the Docker socket on the host the image runs on, so the
#               non-root user reaches it through the socket's group:
#               docker build --build-arg DOCKER_GID=$(stat -c %g /var/run/docker.sock) .
#   BASE_IMAGE, RUST_IMAGE  the Debian bookworm and Rust images (local ones offline).
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE_IMAGE} AS runtime
ARG DOCKER_GID=999
# The user joins the group that owns the socket (a new `docker-host` group unless the
# base already has one with that id), never root: the socket alone is what it needs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 highway \
    && useradd --system --uid 10001 --gid highway --home-dir /var/lib/highway \
        --create-home --shell /usr/sbin/nologin highway \
    && { getent group "$DOCKER_GID" >/dev/null || groupadd --system --gid "$DOCKER_GID" docker-host; } \
    && usermod --append --groups "$(getent group "$DOCKER_GID" | cut -d: -f1)" highway
ENV HIGHWAY_LISTEN=0.0.0.0:8080 \
    HIGHWAY_STATE_DIR=/var/lib/highway
WORKDIR /var/lib/highway
USER highway
EXPOSE 8080
# Ready: Postgres up (and Docker, with HIGHWAY_DOCKER_OPTIONAL=false). The binary asks
# its own /health/ready, so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/highway", "health", "--ready", "--timeout", "4s"]
ENTRYPOINT ["/usr/local/bin/highway"]
CMD ["worker"]

FROM ${RUST_IMAGE} AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY worker/Cargo.toml worker/build.rs worker/
COPY workflows/Cargo.toml workflows/
COPY tests/Cargo.toml tests/
RUN mkdir -p worker/src workflows/src tests/src tests/it \
    && echo 'fn main() {}' > worker/src/main.rs \
    && touch worker/src/lib.rs workflows/src/lib.rs tests/src/lib.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && cargo build --release --locked -p highway-worker --bin highway

FROM deps AS build
COPY . .
# COPY keeps the files' own times, which may be older than the stub build: touch them so
# cargo rebuilds the workspace crates instead of keeping the stubs.
RUN find worker workflows tests migrations -type f -exec touch {} + \
    && cargo build --release --locked -p highway-worker --bin highway

FROM runtime
COPY --from=build /src/target/release/highway /usr/local/bin/highway
