#!/usr/bin/env bash
# Samples a running dron server every SECONDS (default 2) until it exits: its RSS, the gauges
# of its queues (writes and announcements in flight, live and launching runs, notices) summed
# over the shards, and how far behind its schedule each shard is; one line a sample.
# How the overload runs of docs/benchmarks.md (sixteenth and seventeenth sessions) were watched:
#   loadtest/scripts/sample-gauges.sh PID http://127.0.0.1:PORT 1 > samples.log
set -uo pipefail
pid=${1:?usage: sample-gauges.sh PID URL [SECONDS]}
url=${2:?usage: sample-gauges.sh PID URL [SECONDS]}
interval=${3:-2}
gauges='dron_(shard_writes_in_flight|announcements_in_flight|live_instances|runs_launching|notices_in_flight|notifications_queued|tasks_waiting_for_offer)[ {]'
while kill -0 "$pid" 2>/dev/null; do
    rss_mb=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null)
    # Each gauge summed over its shards.
    metrics=$(curl -s -m 2 "$url/metrics")
    sums=$(grep -E "^$gauges" <<<"$metrics" \
        | awk '{sub(/\{.*/, "", $1); total[$1] += $2} END {for (g in total) printf "%s=%d ", g, total[g]}')
    behind=$(grep -E '^dron_shard_behind_seconds\{' <<<"$metrics" | sort \
        | awk '{printf "%s%.2f", (NR > 1 ? "," : ""), $2}')
    echo "$(date +%T) rss=${rss_mb}MB ${sums//dron_/}behind_s=${behind}"
    sleep "$interval"
done
