#!/usr/bin/env bash
# Installs what dron needs to build on a fresh Debian machine (run as root), idempotently.
# Sourced (to export CARGO_TARGET_DIR), it stops at the first failure, then gives the calling
# shell its own options back: a caller without `set -e` is not left with it.
# (Not `$(set +o)`: a command substitution does not see errexit.)
_dron_setup_flags=$-
_dron_setup_pipefail=off
if shopt -qo pipefail; then _dron_setup_pipefail=on; fi
set -euo pipefail

need_apt=()
# RocksDB's Rust bindings are generated with libclang; its C++ needs a C++ compiler.
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# TLS for webhooks (https) and SMTP STARTTLS goes through the system's OpenSSL.
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install the Rust toolchain (rustup, Rust >= 1.88) first" >&2
  exit 1
fi

# One target directory outside the clone, so a fresh clone (CI) reuses the RocksDB build
# (its C++ takes about 45 minutes cold on two cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dron-target}"
mkdir -p "$CARGO_TARGET_DIR"

case $_dron_setup_flags in *e*) set -e ;; *) set +e ;; esac
case $_dron_setup_flags in *u*) set -u ;; *) set +u ;; esac
if [ "$_dron_setup_pipefail" = on ]; then set -o pipefail; else set +o pipefail; fi
unset _dron_setup_flags _dron_setup_pipefail
