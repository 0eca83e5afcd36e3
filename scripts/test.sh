#!/usr/bin/env bash
# Sets up, then runs every test: unit, property and end-to-end (real RocksDB, real
# processes, real HTTP, real kill -9), plus formatting and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# The event tests use the real RabbitMQ on this machine: install it if missing, start it if
# stopped, and stop here with a clear message if it does not come up.
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "test: installing rabbitmq-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq rabbitmq-server
fi
amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! amqp_up; then
  echo "test: starting RabbitMQ"
  rabbitmq-server -detached || true
  for _ in $(seq 1 60); do amqp_up && break; sleep 1; done
fi
if ! amqp_up || ! rabbitmqctl await_startup >/dev/null 2>&1; then
  echo "test: RabbitMQ is not answering on 127.0.0.1:5672; the event tests need it (rabbitmq-server -detached)" >&2
  exit 1
fi

# The notification tests mail a real SMTP server on loopback: Python's aiosmtpd, from PyPI.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "test: installing python3 and pip"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3 python3-pip
fi
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "test: installing aiosmtpd"
  python3 -m pip install --quiet aiosmtpd 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages aiosmtpd
fi

# The UI's end-to-end tests (tests/ui.rs) drive Debian's chromium, headless, through
# chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "test: installing chromium and chromedriver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver
fi

# The container tests (tests/containers.rs) run jobs in a tiny image they build from
# busybox-static's binary, with podman; runc, because podman's default OCI runtime (crun) fails
# in some VMs.
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
  || [ ! -x /bin/busybox ] || ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
  echo "test: installing podman, runc and busybox-static"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq podman runc busybox-static file
fi

# The alert rules (docs/monitoring/) are checked, and unit-tested, with Prometheus's promtool
# (Debian's prometheus package; its service is not started here).
if ! command -v promtool >/dev/null 2>&1; then
  echo "test: installing prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus
fi
promtool check rules docs/monitoring/alerts.yml
(cd docs/monitoring && promtool test rules alerts-test.yml)

# The TLS tests (tests/tls.rs) make their certificates with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
  echo "test: installing openssl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openssl
fi

# The daylight-saving test (tests/daylight_saving.rs) and the nemesis's clock-step fault run
# the server under libfaketime (its wall clock moved; the machine's untouched).
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] \
  && [ ! -e /usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1 ] \
  && [ ! -e /usr/lib/faketime/libfaketimeMT.so.1 ]; then
  echo "test: installing faketime"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq faketime
fi

# The partition test (tests/partition.rs) puts servers in network namespaces: as root it must
# really run, not skip.
# The package test (tests/package.rs) installs and purges the Debian package: as root it must
# really run too.
if [ "$(id -u)" = 0 ]; then export DRON_REQUIRE_NETNS=1 DRON_REQUIRE_PACKAGE=1; fi

cargo fmt --all -- --check
# One profile (release) for build, lint and tests: RocksDB's C++ is compiled once.
cargo clippy --release --locked --workspace --all-targets -- -D warnings
# The tests start the dron binary, which runs tasks through the static shim beside it:
# build everything, put the static shim in place, then run (cargo sees nothing to rebuild).
cargo test --release --locked --workspace --no-run
bash scripts/build-shim.sh
cargo test --release --locked --workspace
