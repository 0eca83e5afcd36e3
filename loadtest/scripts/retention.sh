#!/usr/bin/env bash
# The retention benchmark (issue 18): JOBS jobs each firing every second, a task process each
# (`true`), with every retention set to one minute (and keep_runs = 1, so age alone decides),
# for MINUTES minutes. Every 30 s it prints the data directory's bytes and inodes, split into
# run directories and stores, and the runs finished so far; its last line is one JSON object.
# The data directory must stop growing after the first minutes (docs/benchmarks.md).
#
#   loadtest/scripts/retention.sh DRON_BIN DIR [JOBS] [MINUTES] [PORT]
set -euo pipefail
dron=$(realpath "$1")
dir=$(realpath -m "$2")
jobs=${3:-1000}
minutes=${4:-10}
port=${5:-4490}
url="http://127.0.0.1:$port"
mkdir -p "$dir"
cat > "$dir/dron.toml" <<EOF
[retention]
keep_runs = 1
max_age = "PT1M"
resources_max_age = "PT1M"
notices_max_age = "PT1M"
interval = "PT10S"
EOF
"$dron" serve --config "$dir/dron.toml" --data-dir "$dir/data" --listen "127.0.0.1:$port" \
  > "$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait' EXIT INT TERM
until curl -sf "$url/health" > /dev/null; do sleep 0.2; done
seq 1 "$jobs" | xargs -P 8 -I{} curl -sf -XPOST "$url/scheduler/iso8601" \
  -H 'content-type: application/json' \
  -d '{"name": "ret-{}", "command": "true", "schedule": "R//PT1S", "epsilon": "PT30S"}'
echo "$jobs jobs every second; retention PT1M; sampling every 30 s for $minutes min" >&2

# du fails when a directory goes while it counts (retention deletes them): what it counted
# is still the figure.
bytes() { (du -s --block-size=1 "$1" 2> /dev/null || true) | cut -f1; }
inodes() { (du -s --inodes "$1" 2> /dev/null || true) | cut -f1; }
finished() {
  (curl -sf -m 10 "$url/metrics" || true) | awk '/^dron_runs_finished_total/ {n += $2} END {print n + 0}'
}
samples=()
start=$(date +%s)
end=$((start + minutes * 60))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 30
  t=$(($(date +%s) - start))
  runs_b=$(bytes "$dir/data/runs"); runs_i=$(inodes "$dir/data/runs")
  all_b=$(bytes "$dir/data"); all_i=$(inodes "$dir/data")
  done_runs=$(finished)
  printf 't=%4ss  runs: %12s B %9s inodes  stores+runs: %12s B %9s inodes  finished: %s\n' \
    "$t" "$runs_b" "$runs_i" "$all_b" "$all_i" "$done_runs" >&2
  samples+=("{\"t_s\": $t, \"runs_bytes\": $runs_b, \"runs_inodes\": $runs_i, \"data_bytes\": $all_b, \"data_inodes\": $all_i, \"finished\": $done_runs}")
done
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
joined=$(IFS=,; echo "${samples[*]}")
echo "{\"workload\": \"retention\", \"jobs\": $jobs, \"minutes\": $minutes, \"rss_mb\": $((rss_kb / 1024)), \"samples\": [$joined]}"
