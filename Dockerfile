# syntax=docker/dockerfile:1
#
# imapmux container image: build with the Rust toolchain on Debian 12
# (bookworm), run on distroless cc-debian12 (glibc, CA certificates, no shell,
# no package manager) as the non-root user 65532.
#
#   docker build -t imapmux:0.1.0 .
#   docker run --rm -p 1143:1143 -p 1993:1993 -p 9143:9143 \
#     -v "$PWD/my-imapmux.toml:/etc/imapmux/imapmux.toml:ro" imapmux:0.1.0
#
# The image ships no configuration: mount one at /etc/imapmux/imapmux.toml
# (the Helm chart in helm/imapmux does). Its listeners must use unprivileged
# ports (the chart uses 1143, 1993 and 9143 and maps 143/993 in the Service).
# Needs BuildKit (the default builder of Docker 23+) for the cache mounts.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Manifests and sources only (see .dockerignore). benches/ is needed because
# Cargo.toml declares a bench target, and cargo checks that every declared
# target exists even when it builds only one binary.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# --locked: exactly the dependency versions of Cargo.lock.
# Debug info is dropped (symbols stay, for readable backtraces).
# The registry and target directory are BuildKit caches, so the binary is
# copied out of target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --bin imapmux \
    && install -D -m 0755 target/release/imapmux /out/imapmux \
    && /out/imapmux --version

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="imapmux" \
      org.opencontainers.image.description="IMAP front proxy: TLS termination, routing, caching" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /out/imapmux /usr/local/bin/imapmux
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# 1143: IMAP + STARTTLS, 1993: IMAPS (implicit TLS), 9143: admin HTTP
# (/metrics, /healthz, /readyz).
EXPOSE 1143 1993 9143
# SIGTERM starts the drain (stop accepting, let sessions finish for
# timeouts.drain, then BYE).
STOPSIGNAL SIGTERM
# The binary's default config path in the image: where the chart mounts it.
ENV IMAPMUX_CONFIG=/etc/imapmux/imapmux.toml
ENTRYPOINT ["/usr/local/bin/imapmux"]
CMD ["run"]
