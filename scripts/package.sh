#!/usr/bin/env bash
# Builds dron's Debian package with dpkg-deb (nothing to install: dpkg-deb is part of dpkg):
#   /usr/bin/dron, /usr/bin/dron-shim (static), /etc/dron/dron.toml (the documented defaults,
#   data in /var/lib/dron/data), /etc/dron/agent.env, /etc/default/dron, the units
#   dron.service and dron-agent.service, shell completions, and maintainer scripts that make
#   the `dron` system user and /var/lib/dron{,-agent} (packaging/).
#
#   scripts/package.sh [--no-build] [--bin-dir DIR] [--out DIR] [--fast]
#
# Builds `dron` and the static shim first (cargo, scripts/build-shim.sh) unless --no-build;
# takes both from DIR (default: $CARGO_TARGET_DIR/release); writes
# dron_<version>_<arch>.deb into --out (default: the current directory) and prints its path.
# --fast compresses with gzip -1 instead of xz (the package test: seconds instead of a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dron-target}"

build=1
bin_dir="$CARGO_TARGET_DIR/release"
out=$PWD
compression=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --bin-dir) bin_dir=$2; shift ;;
    --out) out=$2; shift ;;
    --fast) compression=(-Zgzip -z1) ;;
    *) echo "package: unknown argument $1 (see the top of scripts/package.sh)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$build" = 1 ]; then
  source scripts/setup.sh
  cargo build --release --locked -p dron --bin dron
  bash scripts/build-shim.sh
fi
for binary in dron dron-shim; do
  if [ ! -x "$bin_dir/$binary" ]; then
    echo "package: no $bin_dir/$binary (build it, or drop --no-build)" >&2
    exit 1
  fi
done
if ldd "$bin_dir/dron-shim" 2>&1 | grep -q '=>'; then
  echo "package: $bin_dir/dron-shim is not statically linked (scripts/build-shim.sh builds it)" >&2
  exit 1
fi

# "dron 0.1.0 (commit 0123456789ab)" -> 0.1.0
version=$("$bin_dir/dron" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

install -D -m 755 "$bin_dir/dron" "$root/usr/bin/dron"
install -D -m 755 "$bin_dir/dron-shim" "$root/usr/bin/dron-shim"
strip --strip-unneeded "$root/usr/bin/dron" "$root/usr/bin/dron-shim"

# The shipped config with every default, its data directory where the package keeps state.
install -d "$root/etc/dron"
sed 's|^data_dir = .*|data_dir = "/var/lib/dron/data"|' config/dron.toml > "$root/etc/dron/dron.toml"
grep -qx 'data_dir = "/var/lib/dron/data"' "$root/etc/dron/dron.toml"
install -m 640 packaging/agent.env "$root/etc/dron/agent.env"
install -D -m 644 packaging/default "$root/etc/default/dron"
install -D -m 644 packaging/dron.service "$root/lib/systemd/system/dron.service"
install -D -m 644 packaging/dron-agent.service "$root/lib/systemd/system/dron-agent.service"

"$bin_dir/dron" completions bash | install -D -m 644 /dev/stdin "$root/usr/share/bash-completion/completions/dron"
"$bin_dir/dron" completions zsh | install -D -m 644 /dev/stdin "$root/usr/share/zsh/vendor-completions/_dron"
"$bin_dir/dron" completions fish | install -D -m 644 /dev/stdin "$root/usr/share/fish/vendor_completions.d/dron.fish"

doc="$root/usr/share/doc/dron"
install -d "$doc/monitoring"
install -m 644 README.md docs/operations.md docs/cli.md docs/api.md "$doc/"
install -m 644 docs/monitoring/alerts.yml docs/monitoring/dashboard.json "$doc/monitoring/"
printf 'dron\n\nLicense: Apache-2.0 (/usr/share/common-licenses/Apache-2.0).\nBundled UI libraries: their licences are in the source, src/ui/assets/vendor/.\n' > "$doc/copyright"

# The libraries `dron` links (OpenSSL, libstdc++ for RocksDB, glibc), as dpkg-shlibdeps finds
# them; without dpkg-dev, the ones a Debian build links.
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$stage/debian"
  printf 'Source: dron\n\nPackage: dron\nArchitecture: any\n' > "$stage/debian/control"
  shlibs=$(cd "$stage" && dpkg-shlibdeps -O root/usr/bin/dron 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
shlibs=${shlibs:-libc6, libgcc-s1, libssl3, libstdc++6}

install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: dron
Version: $version
Architecture: $arch
Maintainer: dron maintainers <dron@localhost>
Depends: $shlibs, adduser
Section: admin
Priority: optional
Installed-Size: $(du -sk "$root" | cut -f1)
Description: distributed, fault-tolerant job scheduler speaking the Chronos API
 Cron with dependencies: jobs on ISO 8601 or cron schedules, dependency graphs,
 retries, remote agents, a web UI and Prometheus metrics. The server runs as
 dron.service (user dron, data in /var/lib/dron); dron-agent.service runs an
 agent for a remote server once /etc/dron/agent.env is set.
CONTROL
printf '/etc/dron/dron.toml\n/etc/dron/agent.env\n/etc/default/dron\n' > "$root/DEBIAN/conffiles"
install -m 755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/dron_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
