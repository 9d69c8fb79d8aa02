# Multi-stage build of both sides of the contract and the demo backend.
#
#   docker build -t extauthz .
#   docker run --rm -p 9000:9000 -p 8000:8000 extauthz                 # authz-server, Istio-compatible default
#   docker run --rm -p 8080:8080 extauthz gateway run --config config/gateway.toml
#
# docker-compose.yml at the repository root runs the three together.

# --- build --------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# Protos are compiled with protox (pure Rust): no protoc needed.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p authz-server -p gateway --bins \
    && mkdir -p /out \
    && cp target/release/authz-server target/release/gateway target/release/demo-backend /out/

# --- run ----------------------------------------------------------------------------------------
# distroless/cc: glibc and libgcc only, no shell, no package manager; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=builder /out/authz-server /out/gateway /out/demo-backend /usr/local/bin/
COPY config/ /app/config/
USER nonroot:nonroot
# gRPC ext_authz (v3 + v2, reflection, health), HTTP ext_authz mode, gateway, demo backend.
EXPOSE 9000 8000 8080 9100
ENTRYPOINT []
CMD ["authz-server"]
