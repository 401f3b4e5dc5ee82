# Multi-stage build of both binaries; the runtime image is Debian slim, non-root, with nothing but CA roots.
#   docker build -t kinto-signer-rs .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
ARG SIGNER_GIT_COMMIT=unknown
ENV SIGNER_GIT_COMMIT=${SIGNER_GIT_COMMIT}
RUN cargo build --release --locked --features signer_auth/kmsauth,signer_worker/rabbitmq --bin signer-api --bin signer-worker

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/signer --create-home signer
COPY --from=build /src/target/release/signer-api /usr/local/bin/signer-api
COPY --from=build /src/target/release/signer-worker /usr/local/bin/signer-worker
USER 10001
WORKDIR /var/lib/signer
ENV SIGNER_DATA_DIR=/var/lib/signer
EXPOSE 8000 9102
CMD ["signer-api", "serve", "--listen", "0.0.0.0:8000", "--json-logs"]
