# The `herd` binary in a small image: `docker build -t ghcr.io/herd-dev/herd:0.1.0 .`
# Templates and migrations are compiled into the binary; nothing else is needed at run time.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p herd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/herd /usr/local/bin/herd
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/herd"]
CMD ["serve"]
