#!/usr/bin/env bash
# Sets up, builds and runs `dron serve`. Extra arguments go to `dron serve`
# (e.g. --listen 0.0.0.0:4400 --data-dir /var/lib/dron).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# dron, and dron-shim: the small binary each task's shim runs as.
cargo build --release --locked -p dron -p dron-shim --bins
bash scripts/build-shim.sh
exec "$CARGO_TARGET_DIR/release/dron" serve --config config/dron.toml "$@"
