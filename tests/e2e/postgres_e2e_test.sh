#!/usr/bin/env bash
# `cond && pass ... || fail ...` is safe here: pass() always succeeds.
# shellcheck disable=SC2015
# End-to-end test of a fleet on PostgreSQL: four example servers on one database (a PostgreSQL
# started here, pg_temp.sh: a temporary directory, a Unix socket, no TCP), keys managed with the
# `keygate` CLI through the same --db URL. Servers a, b and c LISTEN and poll the store only
# every 60 s, so only NOTIFY can bring them a change in time; d does not LISTEN
# (--db-no-listen, as behind PgBouncer) and polls every 300 ms.
#   1. A key the CLI creates is accepted by every server.
#   2. Revoked through the CLI: every server refuses it within 1 s (curl every 20 ms).
#   3. Restored: accepted again by every server within 1 s.
#   4. PostgreSQL stopped: the servers keep answering from memory (200 for the key they know,
#      401 for an unknown one, never 503); the CLI fails fast (exit 3) with a clear error that
#      does not hold the URL's password.
#   5. PostgreSQL back: without a restart, a revoke reaches every server again (the listener
#      reconnects with backoff, then catches up).
#   6. SIGTERM: every server exits 0; no token or password in their output.
#
#   postgres_e2e_test.sh SERVER_BINARY CLI_BINARY
#
# Exit: 0 pass, 1 fail, 77 skipped (no curl or PostgreSQL; under CI, $CI set and not "false", a
# missing tool fails).
set -uo pipefail

SERVER=${1:?server binary}
CLI=${2:?cli binary}
unset KEYGATE_DB KEYGATE_PEPPER_FILE
# shellcheck source-path=SCRIPTDIR source=pg_temp.sh
source "$(dirname "$0")/pg_temp.sh"

under_ci() { [[ -n "${CI:-}" && "${CI:-}" != false ]]; }
missing() {
  if under_ci; then
    echo "FAIL: $1: CI must run every test (scripts/setup.sh installs it)"
    exit 1
  fi
  echo "SKIP: $1, so this end-to-end test does not run (scripts/setup.sh)"
  exit 77
}
command -v curl >/dev/null || missing "curl not installed"
pg_temp_find || missing "$PG_TEMP_MISSING"

W=$(mktemp -d "${TMPDIR:-/tmp}/keygate_pg_e2e.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pg_temp_cleanup
  rm -rf "$W"
}
trap cleanup EXIT

FAILURES=0
pass() { printf 'ok    %s\n' "$1"; }
fail() {
  printf 'FAIL  %s\n' "$1"
  FAILURES=$((FAILURES + 1))
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

pg_temp_start || exit 1
pg_temp_createdb keys || exit 1
URL=$(pg_temp_url keys)
# The same database with a password in the URL (trust authentication ignores it): it must
# never be printed. The CLI and two servers use this one.
SECRET_PW=e2e-Pa55word-never-printed
URL_PW="postgresql://keygate:$SECRET_PW@/keys?host=$PG_TEMP_DIR&port=5432"

OUT=$("$CLI" --db "$URL_PW" --json create --owner alice --name fleet --env production \
  --scope read:all 2>"$W/create.err")
TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$OUT")
ID=$(sed -n 's/.*"id":"\(key_[A-Za-z0-9]*\)".*/\1/p' <<<"$OUT")
[[ "$TOKEN" == kg_* && "$ID" == key_* ]] || {
  echo "FAIL: create: no token"
  cat "$W/create.err"
  exit 1
}
# Well-formed (checksum and all) but stored nowhere.
UNKNOWN=$("$CLI" --db "$W/other.db" --json create --owner bob --name other --env production \
  2>/dev/null | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')

SERVERS=(a b c d)
# start NAME URL ARGS...: a server on a free port; its base URL in $W/NAME.url.
start() {
  local name=$1 url=$2
  shift 2
  "$SERVER" --db "$url" --port 0 --port-file "$W/$name.ports" --write-cert "$W/$name.pem" \
    --access-log off "$@" 2>"$W/$name.err" &
  PIDS+=($!)
}
start a "$URL_PW" --feed-poll-ms 60000
start b "$URL_PW" --feed-poll-ms 60000
start c "$URL" --feed-poll-ms 60000
start d "$URL_PW" --db-no-listen --feed-poll-ms 300
for s in "${SERVERS[@]}"; do
  for _ in $(seq 300); do
    [[ -s "$W/$s.ports" ]] && break
    sleep 0.1
  done
  port=$(sed -n 's/^https=//p' "$W/$s.ports" 2>/dev/null)
  [[ -n "$port" ]] || {
    echo "FAIL: server $s did not start:"
    cat "$W/$s.err"
    exit 1
  }
  echo "https://localhost:$port" >"$W/$s.url"
done

# status NAME [TOKEN]: the status of GET /v1/projects on server NAME.
status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$W/$1.pem" \
    -H "Authorization: Bearer ${2:-$TOKEN}" "$(cat "$W/$1.url")/v1/projects"
}
# poll NAME WANT START_MS LIMIT_MS: asks server NAME every 20 ms until it answers WANT; prints
# the time (since START_MS) that answer came back, or "late CODE" when a request sent LIMIT_MS or
# more after START_MS still got another answer. A request that is slow to come back (a loaded
# machine, a sanitized server) does not fail the bound: the server decided it after it was sent.
poll() {
  local name=$1 want=$2 start=$3 limit=$4 got sent
  for (( ; ; )); do
    sent=$(($(now_ms) - start))
    got=$(status "$name")
    [[ "$got" == "$want" ]] && echo "$(($(now_ms) - start))" && return
    ((sent >= limit)) && echo "late $got" && return
    sleep 0.02
  done
}
# all_answer WANT LIMIT_MS WHAT: polls every server at once (one poller each, so that one
# server's requests do not delay another's) and passes when no request sent LIMIT_MS or more
# after the call got another answer than WANT; prints for each server when the first WANT came
# back (an upper bound: the request's round trip included).
all_answer() {
  local want=$1 limit=$2 what=$3 start s r times="" late="" pollers=()
  start=$(now_ms)
  for s in "${SERVERS[@]}"; do
    poll "$s" "$want" "$start" "$limit" >"$W/$s.poll" &
    pollers+=($!)
  done
  wait "${pollers[@]}"
  for s in "${SERVERS[@]}"; do
    r=$(cat "$W/$s.poll")
    if [[ "$r" == late* ]]; then late+=" $s (answers ${r#late })"; else times+=" $s=${r}ms"; fi
  done
  [[ -z "$late" ]] && pass "$what: every server answers $want within ${limit} ms ($times )" ||
    fail "$what: not every server answers $want within ${limit} ms:$late$times"
}

# Requests to a sanitized server take longer: KEYGATE_E2E_PROPAGATION_MS raises the bound.
LIMIT_MS=${KEYGATE_E2E_PROPAGATION_MS:-1000}

all_answer 200 5000 "created through the CLI"

"$CLI" --db "$URL_PW" revoke "$ID" >/dev/null 2>"$W/revoke.err" || {
  fail "keygate revoke failed"
  cat "$W/revoke.err"
}
all_answer 401 "$LIMIT_MS" "revoked through the CLI"

"$CLI" --db "$URL_PW" restore "$ID" >/dev/null 2>"$W/restore.err" || fail "keygate restore failed"
all_answer 200 "$LIMIT_MS" "restored through the CLI"

# PostgreSQL down.
pg_temp_stop || fail "PostgreSQL did not stop"
for s in "${SERVERS[@]}"; do
  sk=$(status "$s")
  su=$(status "$s" "$UNKNOWN")
  [[ "$sk" == 200 && "$su" == 401 ]] &&
    pass "PostgreSQL stopped: server $s still answers from memory (known key 200, unknown 401)" ||
    fail "PostgreSQL stopped: server $s answered $sk for the known key, $su for an unknown one"
done
t0=$(now_ms)
"$CLI" --db "$URL_PW" revoke "$ID" >"$W/down.out" 2>"$W/down.err"
rc=$?
took=$(($(now_ms) - t0))
msg=$(cat "$W/down.err")
((rc == 3 && took < 5000)) && pass "PostgreSQL stopped: the CLI fails fast (exit $rc, $took ms)" ||
  fail "PostgreSQL stopped: the CLI exited $rc after $took ms (want 3, under 5 s)"
grep -q "postgres host=$PG_TEMP_DIR" <<<"$msg" && grep -q "dbname=keys" <<<"$msg" &&
  pass "PostgreSQL stopped: the CLI's error names the database: $msg" ||
  fail "PostgreSQL stopped: the CLI's error does not name the database: $msg"
grep -qF "$SECRET_PW" "$W/down.err" "$W/down.out" &&
  fail "the CLI printed the URL's password" || pass "the CLI's error holds no password"

# Back, without restarting the servers: the next revoke reaches them all. Their listeners
# reconnect with backoff (at most 5 s between tries), then catch up.
pg_temp_restart || exit 1
"$CLI" --db "$URL_PW" revoke "$ID" >/dev/null 2>"$W/revoke2.err" || {
  fail "keygate revoke after the restart failed"
  cat "$W/revoke2.err"
}
all_answer 401 10000 "PostgreSQL restarted, revoked through the CLI"
"$CLI" --db "$URL_PW" restore "$ID" >/dev/null 2>&1 || fail "keygate restore failed"
all_answer 200 "$LIMIT_MS" "restored again (the servers' listeners are back)"

for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${PIDS[@]}"; do
  wait "$p"
  rc=$?
  ((rc == 0)) || fail "a server exited with status $rc on SIGTERM"
done
PIDS=()
grep -q "$TOKEN" "$W"/*.err && fail "a token reached a server's or the CLI's output"
grep -qF "$SECRET_PW" "$W"/*.err && fail "the URL's password reached a server's or the CLI's output"
grep -q "keygate-example-server: postgres host=$PG_TEMP_DIR" "$W/a.err" &&
  pass "the server names its database without the URL" ||
  fail "the server's start-up line does not name the database: $(head -n 3 "$W/a.err")"

((FAILURES == 0)) && echo "postgres e2e: all checks passed" && exit 0
echo "postgres e2e: $FAILURES check(s) failed"
for s in "${SERVERS[@]}"; do
  echo "--- server $s:"
  tail -n 20 "$W/$s.err"
done
exit 1
