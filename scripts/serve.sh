#!/usr/bin/env bash
# Sets up, builds and runs `dron serve`. Extra arguments go to `dron serve`
# (e.g. --listen 0.0.0.0:4400 --data-dir /var/lib/dron).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked --bin dron
exec "$CARGO_TARGET_DIR/release/dron" serve --config config/dron.toml "$@"
