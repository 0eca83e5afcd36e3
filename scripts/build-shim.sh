#!/usr/bin/env bash
# Builds the task shim (`dron-shim`, also the agent's launcher) statically linked and puts it
# beside the `dron` binary, where the server looks for it. Run after cargo has built `dron`.
#
# Why static: every running task has its shim, forked from the launcher, alive beside it. A
# dynamically linked shim maps libc, and on machines whose kernel watches memory through DAMON
# (this project's VMs), each page of a file mapped by thousands of processes costs a walk over
# all of them, under the lock that a starting process needs to map the same libc: with 5,000
# tasks running, the shims alone doubled the start delay of new tasks (docs/benchmarks.md).
# A static shim maps no shared library.
#
# The flag must not reach the workspace build (proc-macros cannot be built static), so the shim
# gets a build of its own for the host's target triple, in its own directory of the target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dron-target}"
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p dron-shim --bin dron-shim --target "$host" \
  --config "target.$host.rustflags=[\"-C\",\"target-feature=+crt-static\"]"
# install(1) replaces the file (a new inode): cargo's own copy, hard-linked under deps/, stays
# as it was, and cargo does not rebuild what it still considers fresh.
install -m 755 "$CARGO_TARGET_DIR/$host/release/dron-shim" "$CARGO_TARGET_DIR/release/dron-shim"
if ldd "$CARGO_TARGET_DIR/release/dron-shim" 2>&1 | grep -q '=>'; then
  echo "build-shim: $CARGO_TARGET_DIR/release/dron-shim is not statically linked" >&2
  exit 1
fi
