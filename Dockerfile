# The highway worker image, for docker-compose.yml. Multi-stage: build with the Rust
# toolchain, run on a slim Debian with only the binary (it talks to Docker over the
# mounted socket and to Postgres over the network; no Docker CLI inside).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p highway-worker --bin highway

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/highway /usr/local/bin/highway
ENV HIGHWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/highway"]
CMD ["worker"]
