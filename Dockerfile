# Charter in a container: a build stage with the Rust toolchain, a small runtime stage with
# the binary alone. The project folder (charter.yaml, charters/) is mounted at /project.
#
#   docker build -t charter .
#   docker run --rm -p 8080:8080 -v "$PWD/my-project:/project" \
#     -e SUPPORT_WEBHOOK_SECRET=... charter
#
# With PostgreSQL beside it: `docker compose up` (compose.yaml).

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the build context: `charter --version` reports the commit as "unknown" unless
# CHARTER_GIT_COMMIT is passed (docker build --build-arg CHARTER_GIT_COMMIT=$(git rev-parse --short HEAD)).
ARG CHARTER_GIT_COMMIT=unknown
ENV CHARTER_GIT_COMMIT=${CHARTER_GIT_COMMIT}
RUN cargo build --release --locked -p charter \
 && install -D target/release/charter /out/charter

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /project --shell /usr/sbin/nologin charter
COPY --from=build /out/charter /usr/local/bin/charter
USER charter
WORKDIR /project
VOLUME ["/project"]
EXPOSE 8080
# Listen beyond loopback inside the container; define API tokens in charter.yaml, since
# without them the admin API is open.
ENV CHARTER_LISTEN=0.0.0.0:8080 \
    CHARTER_LOG_FORMAT=json
ENTRYPOINT ["charter"]
CMD ["serve", "/project"]
