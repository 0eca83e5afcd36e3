#!/usr/bin/env bash
# Starts a local dron cluster for benchmarks: three servers on 127.0.0.1:4401-4403 (data under
# DIR), and AGENTS `dron agent` processes that know all three. Prints the servers' URLs, then
# waits; Ctrl-C (or SIGTERM) stops everything.
#
#   loadtest/scripts/cluster.sh DRON_BIN DIR [AGENTS] [CONFIG]
#   dron-loadtest --url http://127.0.0.1:4401 api --jobs 20000   # any server answers
#
# CONFIG: a dron.toml every server reads (e.g. [cluster] snapshot_after_entries).
# A follower's catch-up after a minute down under load: loadtest/scripts/catchup.py.
#
# The leader's pid (for --server-pid): `dron cluster --url http://127.0.0.1:4401` names the
# leader; its pid is in DIR/nN/pid.
set -euo pipefail
dron=$(realpath "$1")
dir=$(realpath -m "$2")
agents=${3:-1}
config=()
[ -n "${4:-}" ] && config=(--config "$(realpath "$4")")
mkdir -p "$dir"
head -c 32 /dev/urandom | base64 > "$dir/secret"
peers="1=http://127.0.0.1:4401,2=http://127.0.0.1:4402,3=http://127.0.0.1:4403"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for n in 1 2 3; do
  mkdir -p "$dir/n$n"
  "$dron" serve "${config[@]}" --node-id "$n" --peers "$peers" --cluster-secret-file "$dir/secret" \
    --listen "127.0.0.1:440$n" --data-dir "$dir/n$n/data" > "$dir/n$n/log" 2>&1 &
  pids+=($!)
  echo $! > "$dir/n$n/pid"
done
servers="http://127.0.0.1:4401,http://127.0.0.1:4402,http://127.0.0.1:4403"
for a in $(seq 1 "$agents"); do
  mkdir -p "$dir/a$a"
  "$dron" agent --server "$servers" --name "bench-$a" --work-dir "$dir/a$a/work" \
    > "$dir/a$a/log" 2>&1 &
  pids+=($!)
done
echo "cluster: $servers (logs and data in $dir)"
wait
