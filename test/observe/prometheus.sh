#!/usr/bin/env bash
# A real Prometheus scrapes the demo (examples/pipeline --http) and sees
# the consumer lag rise and fall:
#
#  - the demo runs with a backlog (the generator writes faster than the
#    slow stage drains); a Prometheus server of this test's own (a
#    generated prometheus.yml: scrape_interval 1s, one static target, the
#    demo's /metrics) scrapes it until `up` is 1;
#  - rill_consumer_lag has one series per partition with
#    group="click-enricher", topic="clicks", partition="0".."P-1";
#  - sum(rill_consumer_lag) is above 0 while the backlog exists and falls
#    to 0 before a deadline;
#  - the exposition passes `promtool check metrics`.
#
# usage: prometheus.sh DEMO [PROMETHEUS [PROMTOOL [CURL]]]
# (or the environment: RILL_DEMO, PROMETHEUS, PROMTOOL, CURL). Exits 77
# (skipped) only when a program is missing.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

DEMO=${1:-${RILL_DEMO:-}}
PROMETHEUS=${2:-${PROMETHEUS:-$(command -v prometheus)}}
PROMTOOL=${3:-${PROMTOOL:-$(command -v promtool)}}
CURL=${4:-${CURL:-$(command -v curl)}}
need "the demo (examples/pipeline)" "$DEMO" "build it (target pipeline)"
need prometheus "$PROMETHEUS"
need promtool "$PROMTOOL"
need curl "$CURL"

PARTITIONS=4
GROUP=click-enricher
TOPIC=clicks
LAST_QUERY=""
LAST_ANSWER=""

on_fail() {
  say "--- the last query: $LAST_QUERY"
  say "--- its answer: $LAST_ANSWER"
  if [ -n "${PROM_URL:-}" ]; then
    say "--- rill_consumer_lag now:"
    "$CURL" -sG --max-time 5 --data-urlencode 'query=rill_consumer_lag' "$PROM_URL/api/v1/query"
    echo
    say "--- the scrape target's state:"
    "$CURL" -s --max-time 5 "$PROM_URL/api/v1/targets?state=active"
    echo
  fi
  if [ -f "$OBS_TMP/prometheus.log" ]; then
    say "--- Prometheus's log (last 15 lines)"
    tail -n 15 "$OBS_TMP/prometheus.log"
  fi
}

# query PROMQL: an instant query; sets LAST_ANSWER (the JSON) and QV, the
# first sample's value (empty when the result is empty). Always true.
query() {
  LAST_QUERY=$1
  LAST_ANSWER=$("$CURL" -sfG --max-time 5 --data-urlencode "query=$1" "$PROM_URL/api/v1/query")
  QV=$(printf '%s' "$LAST_ANSWER" | sed -n 's/.*"value":\[[^],]*,"\([^"]*\)"\].*/\1/p')
}

# 1. The demo, with a backlog of 10-20 s on 2 cores.
start_demo "$DEMO" --records 60000 --slow-us 150 --partitions "$PARTITIONS" \
  --http 127.0.0.1:0 --linger 30
target=${DEMO_URL#http://}

# 2. Prometheus on a free loopback port of its own: a port nobody answers
# on, then the server's own flags must name this test's storage (another
# server that took the port in between does not count); retried on a
# collision.
cat >"$OBS_TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rill
    metrics_path: /metrics
    static_configs:
      - targets: ['$target']
EOF
PROM_URL=""
for attempt in 1 2 3 4 5; do
  port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
  if "$CURL" -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    continue # something answers there
  fi
  rm -rf "$OBS_TMP/tsdb"
  "$PROMETHEUS" --config.file="$OBS_TMP/prometheus.yml" --storage.tsdb.path="$OBS_TMP/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$OBS_TMP/prometheus.log" 2>&1 &
  prom_pid=$!
  track "$prom_pid"
  end=$((SECONDS + 30))
  while until_deadline "$end"; do
    if ! kill -0 "$prom_pid" 2>/dev/null; then
      grep -qi 'address already in use' "$OBS_TMP/prometheus.log" && break
      fail "prometheus ended at its start (attempt $attempt, port $port)"
    fi
    if "$CURL" -sf --max-time 2 "http://127.0.0.1:$port/-/ready" >/dev/null &&
      "$CURL" -sf --max-time 2 "http://127.0.0.1:$port/api/v1/status/flags" |
      grep -qF "\"storage.tsdb.path\":\"$OBS_TMP/tsdb\""; then
      PROM_URL=http://127.0.0.1:$port
      break
    fi
    sleep 0.2
  done
  [ -n "$PROM_URL" ] && break
  kill -0 "$prom_pid" 2>/dev/null && fail "prometheus was not ready within 30 s (port $port)"
  say "port $port was taken (attempt $attempt): another one"
done
[ -n "$PROM_URL" ] || fail "no free port for prometheus after 5 attempts"
say "prometheus (pid $prom_pid) at $PROM_URL scrapes $DEMO_URL/metrics"

# 3. The target is up.
end=$((SECONDS + 20))
until query "up{job=\"rill\"}" && [ "$QV" = 1 ]; do
  until_deadline "$end" || fail "up{job=\"rill\"} was not 1 within 20 s"
  demo_alive
  sleep 0.25
done
say "up{job=\"rill\"} is 1"

# 4. One series per partition with the expected labels, and a summed lag
# above 0 while the backlog exists.
sel="group=\"$GROUP\",topic=\"$TOPIC\""
parts=$(seq -s '|' 0 $((PARTITIONS - 1)))
labels_ok=0
max_lag=0
end=$((SECONDS + 30))
while :; do
  demo_alive
  if [ "$labels_ok" = 0 ] &&
    query "count(count by (partition) (rill_consumer_lag{$sel,partition=~\"$parts\"}))" &&
    [ "$QV" = "$PARTITIONS" ] && query "count(rill_consumer_lag{$sel})" && [ "$QV" = "$PARTITIONS" ]; then
    labels_ok=1
    say "rill_consumer_lag{$sel} has one series for each partition $parts"
  fi
  query "sum(rill_consumer_lag{$sel})"
  lag=$QV
  case "$lag" in
    '' | *[!0-9]*) ;;
    *) [ "$lag" -gt "$max_lag" ] && max_lag=$lag ;;
  esac
  [ "$labels_ok" = 1 ] && [ "$max_lag" -gt 0 ] && break
  until_deadline "$end" ||
    fail "within 30 s: partition series found: $labels_ok (want 1), largest summed lag $max_lag (want > 0)"
  sleep 0.25
done
say "sum(rill_consumer_lag{$sel}) reached $max_lag during the backlog"
say "the series: $("$CURL" -sG --max-time 5 --data-urlencode "query=rill_consumer_lag{$sel}" \
  "$PROM_URL/api/v1/query")"

# 5. The exposition lints clean (now, with every family present).
"$CURL" -sf --max-time 10 "$DEMO_URL/metrics" >"$OBS_TMP/metrics.txt" ||
  fail "GET $DEMO_URL/metrics failed"
if ! "$PROMTOOL" check metrics <"$OBS_TMP/metrics.txt" >"$OBS_TMP/promtool.out" 2>&1; then
  cat "$OBS_TMP/promtool.out"
  fail "promtool check metrics found problems in $DEMO_URL/metrics (above)"
fi
say "promtool check metrics: clean ($(grep -c '^# TYPE' "$OBS_TMP/metrics.txt") families, $(grep -vc '^#' "$OBS_TMP/metrics.txt") samples)"

# 6. The lag falls to 0 on every partition once the backlog is drained.
end=$((SECONDS + 45))
until query "count(rill_consumer_lag{$sel} == 0)" && [ "$QV" = "$PARTITIONS" ] &&
  query "sum(rill_consumer_lag{$sel})" && [ "$QV" = 0 ]; do
  until_deadline "$end" || fail "sum(rill_consumer_lag{$sel}) did not fall to 0 within 45 s"
  demo_alive
  sleep 0.5
done
say "sum(rill_consumer_lag{$sel}) fell to 0 (from $max_lag) after ${SECONDS} s"
# What Prometheus stored says the same: above 0 earlier, 0 at the end.
query "max_over_time(sum(rill_consumer_lag{$sel})[5m:1s])"
stored=$QV
case "$stored" in
  '' | 0 | *[!0-9]*) fail "max_over_time of the summed lag over the run is '$stored', want > 0" ;;
esac
say "the stored maximum of the summed lag over the run: $stored"

sanitizer_check
say "PASS"
