# leadflow: build with the pinned toolchain, run on a slim Debian as an unprivileged user.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        libclang-dev cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/leadflow /usr/local/bin/leadflow

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/leadflow --create-home leadflow
COPY --from=build /usr/local/bin/leadflow /usr/local/bin/leadflow
COPY avro /opt/leadflow/avro
COPY topologies /opt/leadflow/topologies
COPY rules /opt/leadflow/rules
WORKDIR /opt/leadflow
USER leadflow
ENV LEADFLOW_STATE_DIR=/var/lib/leadflow
ENTRYPOINT ["leadflow"]
