#!/usr/bin/env bash
# Without a container engine: builds the binary the way docker/Dockerfile's build stage
# does, from a directory holding only what that stage COPYs (read from the Dockerfile),
# with `--locked`. A source file, lock entry or compiled-in script the image would lack
# fails here as it would in `docker build`. Dependencies come from the local cargo cache.
# Usage: scripts/docker-context-check.sh   (a release build: a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
# `COPY a b ./dest` lines of the build stage (not `COPY --from=…`): every word but the last.
awk '/^FROM /{stage++} stage==1 && /^COPY / && !/--from/ {for (i = 2; i < NF; i++) print $i}' \
    docker/Dockerfile | while read -r path; do
    cp -r "$path" "$CONTEXT/"
done
BUILD=$(awk '/^FROM /{stage++} stage==1 && /^RUN cargo build/ {sub(/^RUN /, ""); print}' docker/Dockerfile)
echo "context: $(ls "$CONTEXT" | tr '\n' ' ')"
echo "running: $BUILD"
(cd "$CONTEXT" && CARGO_TARGET_DIR="$PWD/target" $BUILD)
test -x "$CONTEXT/target/release/cdc-cache"
"$CONTEXT/target/release/cdc-cache" --version
echo "docker build stage: ok"
