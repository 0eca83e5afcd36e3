#!/usr/bin/env bash
# Sets up, then runs every test: unit, property and end-to-end (real RocksDB, real
# processes, real HTTP, real kill -9), plus formatting and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# RabbitMQ on this machine is what the event-bus tests will use; start it if it stopped.
if command -v rabbitmq-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "test: starting RabbitMQ"
  rabbitmq-server -detached || true
fi

cargo fmt --all -- --check
# One profile (release) for build, lint and tests: RocksDB's C++ is compiled once.
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace
