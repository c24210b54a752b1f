# syntax=docker/dockerfile:1
# vigil's container image: a release build of the `vigil` binary on Debian slim.
#
#   docker build -t vigil:local .
#   docker compose --profile vigil up --build     (see docker-compose.yml)
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

# --- build ------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

# rdkafka builds its bundled librdkafka from source (make, a C compiler, zlib);
# cmake for its cmake-build feature.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace (src/, loadtest/, benches/, ...): cargo needs every
# member's manifest and sources. The cache mounts keep the registry and the
# compiled dependencies across builds, so a source change rebuilds vigil only.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil --bin vigil \
 && install -D -m 0755 target/release/vigil /out/vigil

# --- run --------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin vigil

COPY --from=builder /out/vigil /usr/local/bin/vigil

USER 10001:10001
# Prometheus metrics (VIGIL_METRICS_ADDR, e.g. 0.0.0.0:9898).
EXPOSE 9898
ENTRYPOINT ["vigil"]
