#!/usr/bin/env bash
# The status page in a real browser (headless Chromium) against the demo
# (examples/pipeline --http), with a backlog and one failure:
#
#  (a) the page loads without console errors: Chromium runs with
#      --enable-logging=stderr, which writes every console message of the
#      page (console.error/warn/log, uncaught exceptions, unhandled
#      rejections, Content-Security-Policy violations) as an
#      "INFO:CONSOLE(...)" line; the page logs nothing by design, so any
#      such line fails the test. Its own error banner (#error, where it
#      reports a status it cannot fetch or draw) must stay hidden. Failed
#      loads of its files are not console messages there: curl checks /,
#      /app.js and /app.css answer 200 with their types.
#  (b) its numbers change: the DOM dumped twice, 3 s apart, each after the
#      page fetched api/status a few times (--virtual-time-budget); the
#      totals (records in/out per second, lag) are numbers, and the numbers
#      of the cards and pipelines differ between the two; a screenshot with
#      each (PNG files, not empty).
#  (c) the restart shows: once /tree reports restarts >= 1 (the slow stage
#      failed on --fail-at's record and the supervisor restarted the
#      pipeline), the page's tree shows "1 restart" and the restarts card
#      counts it.
#
# RILL_UPDATE_SCREENSHOT=1 also writes the last screenshot (the page after
# the restart) to docs/status-page.png.
#
# usage: page.sh DEMO [CHROMIUM [CURL]]
# (or the environment: RILL_DEMO, CHROMIUM, CURL). Exits 77 (skipped)
# only when a program is missing.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

DEMO=${1:-${RILL_DEMO:-}}
CHROMIUM=${2:-${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}}
CURL=${3:-${CURL:-$(command -v curl)}}
need "the demo (examples/pipeline)" "$DEMO" "build it (target pipeline)"
need chromium "$CHROMIUM"
need curl "$CURL"

LAST_SEEN=""
on_fail() {
  if [ -n "$LAST_SEEN" ]; then
    say "--- what the test last saw:"
    printf '%s\n' "$LAST_SEEN"
  fi
  if [ -n "${DEMO_URL:-}" ]; then
    say "--- $DEMO_URL/api/status now:"
    "$CURL" -s --max-time 5 "$DEMO_URL/api/status"
    echo
  fi
}

# browse NAME: loads the page in headless Chromium with a fresh profile;
# the DOM (after ~3 s of the page's virtual time: a few fetches of
# api/status) into $OBS_TMP/NAME.html, a screenshot into NAME.png,
# Chromium's log into NAME.log. Fails on a console message, on the page's
# error banner, on an empty screenshot.
browse() {
  local name=$1 dom=$OBS_TMP/$1.html png=$OBS_TMP/$1.png log=$OBS_TMP/$1.log
  demo_alive
  if ! timeout -k 5 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-extensions --hide-scrollbars --mute-audio --user-data-dir="$OBS_TMP/profile-$name" \
    --enable-logging=stderr --v=0 --virtual-time-budget=3000 --window-size=1280,1200 \
    --screenshot="$png" --dump-dom "$DEMO_URL/" >"$dom" 2>"$log"; then
    LAST_SEEN=$(tail -n 20 "$log")
    fail "chromium failed on $DEMO_URL/ ($name)"
  fi
  if grep -q ':CONSOLE' "$log"; then
    LAST_SEEN=$(grep ':CONSOLE' "$log")
    fail "the page wrote to the console ($name): every console message counts as an error"
  fi
  [ -s "$dom" ] || fail "chromium dumped no DOM ($name)"
  if ! grep -qE '<div[^>]* id="error"[^>]* hidden' "$dom"; then
    LAST_SEEN=$(grep -oE '<div[^>]* id="error"[^>]*>[^<]*' "$dom")
    fail "the page shows its error banner ($name)"
  fi
  if [ ! -s "$png" ] || [ "$(head -c 4 "$png" | od -An -c | tr -d ' ')" != '211PNG' ]; then
    fail "no PNG screenshot ($name: $(wc -c <"$png" 2>/dev/null || echo 0) bytes)"
  fi
  say "$name: DOM $(wc -c <"$dom") bytes, screenshot $(wc -c <"$png") bytes, no console message"
}

# text_of DOMFILE ID: the text of the element with that id (no children).
text_of() {
  grep -oE "id=\"$2\"[^>]*>[^<]*" "$1" | head -n 1 | sed 's/^[^>]*>//'
}

# numbers_of DOMFILE: every number shown in the cards and the pipelines
# (their text, tags removed), one line.
numbers_of() {
  sed -n '/<main>/,/<\/main>/p' "$1" | sed -n '1,/<h2>Supervision tree/p' |
    sed 's/<[^>]*>/ /g' | grep -oE '[0-9][0-9.,]*' | tr '\n' ' '
}

# is_number TEXT: the page's formats (1,234 / 12.5 / 3.4 k / 1.20 M).
is_number() { [[ $1 =~ ^[0-9][0-9,]*(\.[0-9]+)?( [kM])?$ ]]; }

# 1. The demo: a backlog of 10-20 s on 2 cores, the slow stage failing
# once on record 45000, some 3/4 of the way: after the two loads of (b),
# since a restarted source does not know its lag until librdkafka's first
# statistics (the page shows "–" meanwhile).
start_demo "$DEMO" --records 60000 --slow-us 150 --partitions 4 --fail-at 45000 \
  --http 127.0.0.1:0 --linger 30

# 2. The page's files answer (a failed load is no console message).
for f in /:text/html /app.js:javascript /app.css:text/css; do
  path=${f%%:*}
  type=${f#*:}
  got=$("$CURL" -s -o /dev/null --max-time 5 -w '%{http_code} %{content_type}' "$DEMO_URL$path")
  case "$got" in
    "200 "*"$type"*) ;;
    *) fail "GET $path answered '$got', want 200 and a type with '$type'" ;;
  esac
done
say "/, /app.js and /app.css answer 200"

# 3. (a) and (b): two loads 3 s apart while the backlog drains, once the
# lag is known (librdkafka's first statistics: till then the page shows
# "–"), i.e. once /metrics has a rill_consumer_lag sample per partition.
end=$((SECONDS + 30))
while :; do
  demo_alive
  n=$("$CURL" -s --max-time 5 "$DEMO_URL/metrics" | grep -c '^rill_consumer_lag{.*group="click-enricher"')
  LAST_SEEN="rill_consumer_lag samples in /metrics: $n"
  [ "$n" -ge 4 ] && break
  until_deadline "$end" || fail "the lag of the 4 partitions was not known within 30 s"
  sleep 0.2
done
browse first
next=$((SECONDS + 3))
while until_deadline "$next"; do sleep 0.2; done
browse second
for id in rate-in rate-out lag-total; do
  for n in first second; do
    v=$(text_of "$OBS_TMP/$n.html" "$id")
    LAST_SEEN="#$id in the $n load: '$v'"
    is_number "$v" || fail "#$id is not a number in the $n load"
  done
done
answers=$(grep -oE 'data-answers="[0-9]+"' "$OBS_TMP/second.html" | tr -dc 0-9)
[ "${answers:-0}" -ge 2 ] || fail "the page drew ${answers:-no} answers of api/status, want >= 2"
n1=$(numbers_of "$OBS_TMP/first.html")
n2=$(numbers_of "$OBS_TMP/second.html")
LAST_SEEN="first:  $n1
second: $n2"
[ -n "$n1" ] || fail "no numbers in the cards and pipelines"
[ "$n1" != "$n2" ] || fail "the page's numbers did not change in 3 s"
for n in first second; do
  say "$n load: in/s $(text_of "$OBS_TMP/$n.html" rate-in), out/s $(text_of "$OBS_TMP/$n.html" rate-out), lag $(text_of "$OBS_TMP/$n.html" lag-total)"
done

# 4. (c) The restart, once the service reports it.
end=$((SECONDS + 40))
while :; do
  demo_alive
  tree=$("$CURL" -s --max-time 5 "$DEMO_URL/tree")
  LAST_SEEN="GET /tree: $tree"
  printf '%s' "$tree" | grep -qE '"restarts": ?[1-9]' && break
  until_deadline "$end" || fail "/tree reported no restart within 40 s (--fail-at 45000)"
  sleep 0.5
done
printf '%s' "$tree" | grep -qE '"restarts": ?([2-9]|[1-9][0-9])' &&
  fail "/tree reports more restarts than the one --fail-at causes"
say "/tree reports a restart; the demo's log says:"
grep -i 'restart' "$OBS_TMP/demo.err"
# The restarted pipeline's clients reconnect: once the service is ready
# again (a page with all its badges green for docs/status-page.png).
end=$((SECONDS + 30))
until ready=$("$CURL" -s --max-time 5 -w ' %{http_code}' "$DEMO_URL/health/ready") &&
  [ "${ready##* }" = 200 ]; do
  LAST_SEEN="GET /health/ready: $ready"
  until_deadline "$end" || fail "the service was not ready again within 30 s of the restart"
  demo_alive
  sleep 0.2
done
browse restarted
tree_html=$(sed -n '/<h2>Supervision tree/,/<\/section>/p' "$OBS_TMP/restarted.html")
LAST_SEEN="the page's tree: $tree_html"
printf '%s' "$tree_html" | grep -qE '>1 restart<' ||
  fail "the page's tree does not show '1 restart'"
total=$(text_of "$OBS_TMP/restarted.html" restarts-total)
LAST_SEEN="#restarts-total: '$total'"
[[ $total =~ ^[1-9][0-9]*$ ]] || fail "the restarts card shows '$total', want >= 1"
say "the page's tree shows '1 restart', the restarts card $total, the badges: $(text_of "$OBS_TMP/restarted.html" live), $(text_of "$OBS_TMP/restarted.html" ready)"

if [ "${RILL_UPDATE_SCREENSHOT:-0}" = 1 ]; then
  cp "$OBS_TMP/restarted.png" "$here/../../docs/status-page.png"
  say "wrote docs/status-page.png"
fi

sanitizer_check
say "PASS"
