#!/usr/bin/env bash
# Samples a running dron server every 2 s until it exits: its RSS and the gauges of its queues
# (writes and announcements in flight, live and launching runs, notices), one line a sample.
# How the overload runs of docs/benchmarks.md (sixteenth session) were watched:
#   loadtest/scripts/sample-gauges.sh PID http://127.0.0.1:PORT > samples.log
set -uo pipefail
pid=${1:?usage: sample-gauges.sh PID URL}
url=${2:?usage: sample-gauges.sh PID URL}
gauges='dron_(shard_writes_in_flight|announcements_in_flight|live_instances|runs_launching|notices_in_flight|notifications_queued|tasks_waiting_for_offer)[ {]'
while kill -0 "$pid" 2>/dev/null; do
    rss_mb=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null)
    # Each gauge summed over its shards.
    sums=$(curl -s -m 2 "$url/metrics" | grep -E "^$gauges" \
        | awk '{sub(/\{.*/, "", $1); total[$1] += $2} END {for (g in total) printf "%s=%d ", g, total[g]}')
    echo "$(date +%T) rss=${rss_mb}MB ${sums//dron_/}"
    sleep 2
done
