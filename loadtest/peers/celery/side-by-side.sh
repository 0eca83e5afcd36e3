#!/bin/sh
# The runs of docs/benchmarks.md "dron and Celery side by side", back to back, each one's output in
# $OUT/<name>.out and .err, a log in $OUT/log. A run is skipped when it would end after $CUTOFF
# (Unix seconds; default a day from now); its estimated length in seconds is its first argument.
mkdir -p "${OUT:-/tmp/wt5-bench}"
B=${LOADTEST:-/root/.cache/dron-target-loadtest/release/dron-loadtest}
D=${DRON:-/root/.cache/dron-target/release/dron}
O=${OUT:-/tmp/wt5-bench}
SAT="--step 200 --step-secs 15 --period-ms 10000 --max-jobs 3000 --limit-ms 1000"
FB="--long-jobs 500 --per-second 10 --duration-secs 180"
CUTOFF=${CUTOFF:-$(( $(date +%s) + 86400 ))}
run() {
  secs=$1; name=$2; shift 2
  if [ $(( $(date +%s) + secs )) -gt $CUTOFF ]; then echo "$(date -u +%T) skip $name (no time)" >> $O/log; return; fi
  echo "$(date -u +%T) start $name: $*" >> $O/log; "$@" > $O/$name.out 2> $O/$name.err; echo "$(date -u +%T) end $name rc=$?" >> $O/log
}
run 420 sat-dron $B --dron-bin $D saturate $SAT --runs $O/runs-sat-dron
run 420 sat-celery $B peer celery saturate $SAT --runs $O/runs-sat-celery
run 270 fb-dron $B --dron-bin $D facebook $FB --runs $O/runs-fb-dron
run 270 fb-celery-prefork2 $B peer celery facebook $FB --runs $O/runs-fb-celery-prefork2
run 270 fb-celery-threads600 $B peer celery --pool threads --concurrency 600 facebook $FB --runs $O/runs-fb-celery-threads600
echo "$(date -u +%T) all done" >> $O/log
