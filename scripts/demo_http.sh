#!/usr/bin/env bash
# The narrated main-job demo: keygate protecting a real HTTPS API.
#
#   scripts/demo_http.sh [--keep]
#
# Starts the example API server (examples/server: Boost.Beast + OpenSSL) on a
# fresh SQLite key store in a temporary directory, manages keys with the
# `keygate` CLI while it runs, and makes real HTTPS requests with curl:
# 200, 401 (missing, garbage, wrong environment), 403 (scope), 429 with
# Retry-After, plain HTTP refused, a revoke taking effect on the running
# server, a restore, and a roll with a grace period. Then it stops the server
# (SIGTERM), and shows two servers sharing a key's rate limit through a
# redis-server it starts in the temporary directory, then two servers on one
# PostgreSQL database (a throwaway server it starts, tests/e2e/pg_temp.sh): a
# key revoked through the CLI is refused by both, and while PostgreSQL is down
# they keep verifying from memory. It leaves nothing running. Exits 0 only if
# every step got the expected status.
#
# Binaries come from $KEYGATE_BUILD_DIR (default build/release), built there
# if missing. --keep leaves the temporary directory (database, certificate,
# access log) in place and names it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
BUILD=${KEYGATE_BUILD_DIR:-build/release}
CLI="$BUILD/src/cli/keygate"
SERVER="$BUILD/examples/keygate_example_server"

if [[ -t 1 ]]; then
  B=$'\e[1m' DIM=$'\e[2m' G=$'\e[32m' R=$'\e[31m' C=$'\e[36m' N=$'\e[0m'
else
  B="" DIM="" G="" R="" C="" N=""
fi

if [[ ! -x "$CLI" || ! -x "$SERVER" ]]; then
  echo "${DIM}building the keygate CLI and the example server in $BUILD ...${N}"
  if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYGATE_BUILD_BENCH=OFF \
      >/dev/null || exit 1
  fi
  cmake --build "$BUILD" --target keygate_cli keygate_example_server -j "$(nproc)" >/dev/null ||
    exit 1
fi
command -v curl >/dev/null || { echo "this demo needs curl"; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/keygate_demo.XXXXXX")
SERVER_PID=""
CONSOLE_PID=""  # part 11: keygate serve
FLEET_PIDS=()  # part 9: two servers and their Redis; part 10: two servers
# shellcheck source-path=SCRIPTDIR source=../tests/e2e/pg_temp.sh
source tests/e2e/pg_temp.sh  # part 10: a throwaway PostgreSQL
cleanup() {
  for p in "${FLEET_PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pg_temp_cleanup
  [[ -n "$CONSOLE_PID" ]] && kill -TERM "$CONSOLE_PID" 2>/dev/null
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if ((KEEP)); then echo "${DIM}kept $W${N}"; else rm -rf "$W"; fi
}
trap cleanup EXIT

FAILED=0
STEP=0
say() { printf '\n%s\n' "${B}$*${N}"; }
narrate() { printf '%s\n' "${DIM}$*${N}"; }
show_cmd() { printf '  %s$ %s%s\n' "$C" "$*" "$N"; }

DB="$W/keygate.db"
kg() { "$CLI" --db "$DB" "$@"; }

# create VAR NAME ENV [options...]: makes a key with the CLI, keeps its
# token in $VAR and its id in ${VAR}_ID. The token is shown once, as the CLI
# would show it to a person, then only as its hint.
create() {
  local var=$1 name=$2 env=$3 out id token
  shift 3
  show_cmd "keygate create --name $name --owner alice --env $env $*"
  out=$(kg --json create --name "$name" --owner alice --env "$env" "$@" 2>/dev/null) || {
    echo "${R}keygate create failed${N}"
    exit 1
  }
  id=$(sed -n 's/.*"id":"\(key_[A-Za-z0-9]*\)".*/\1/p' <<<"$out")
  token=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$out")
  printf -v "$var" '%s' "$token"
  printf -v "${var}_ID" '%s' "$id"
  printf '    %s  %s...%s  (token shown once; kept in $%s)\n' "$id" "${token:0:8}" \
    "${token: -4}" "$var"
}

# request WANT DESCRIPTION CURL_ARGS...: one real HTTPS request; prints the
# status line, the auth-related headers and the body; checks the status.
request() {
  local want=$1 what=$2
  shift 2
  STEP=$((STEP + 1))
  printf '\n%s\n' "${B}[$STEP] $what${N}"
  local shown=()
  for a in "$@"; do shown+=("$a"); done
  show_cmd "curl ${DISPLAY_ARGS:-${shown[*]}}"
  : >"$W/h"
  : >"$W/b"
  curl -sS --cacert "$W/cert.pem" -D "$W/h" -o "$W/b" "$@" 2>"$W/curl.err"
  local got
  got=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$W/h")
  sed -n '1p' "$W/h" | tr -d '\r' | sed 's/^/    /'
  grep -aiE '^(WWW-Authenticate|Retry-After|RateLimit-Policy|RateLimit|Cache-Control):' "$W/h" |
    tr -d '\r' | sed 's/^/    /'
  [[ -s "$W/b" ]] && { cat "$W/b"; echo; } | sed 's/^/    /'
  if [[ "$got" == "$want" ]]; then
    printf '    %s✔ %s as expected%s\n' "$G" "$want" "$N"
  else
    printf '    %s✘ expected %s, got %s%s\n' "$R" "$want" "${got:-no response}" "$N"
    cat "$W/curl.err"
    FAILED=$((FAILED + 1))
  fi
  DISPLAY_ARGS=""
}

# status_now TOKEN: the status of GET /v1/projects right now.
status_now() {
  curl -s --cacert "$W/cert.pem" -o /dev/null -w '%{http_code}' "$BASE/v1/projects" \
    -H "Authorization: Bearer $1"
}

say "keygate: API keys for a real HTTPS API"
narrate "Work directory: $W (SQLite key store, certificate, access log)."

say "1. Issue keys with the keygate CLI (keys live in $DB)"
create READER ci-reader production --scope read:all
create WRITER deploy-bot production --scope write:all
create ADMIN ops-admin production --scope admin
create PREVIEW staging-reader preview --scope read:all
create LIMITED partner-feed production --scope read:all --rate 3/1m
narrate "The store keeps only SHA-256 digests; tokens cannot be recovered from it."

say "2. Start the example API server (HTTPS, keys from the same SQLite file)"
show_cmd "keygate_example_server --db keygate.db --port 0 --http-port 0 --write-cert cert.pem"
"$SERVER" --db "$DB" --port 0 --http-port 0 --port-file "$W/ports" --write-cert "$W/cert.pem" \
  --access-log "$W/access.log" 2>"$W/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do
  [[ -s "$W/ports" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ ! -s "$W/ports" ]]; then
  echo "${R}the server did not start:${N}"
  cat "$W/server.err"
  exit 1
fi
HTTPS_PORT=$(sed -n 's/^https=//p' "$W/ports")
HTTP_PORT=$(sed -n 's/^http=//p' "$W/ports")
BASE="https://localhost:$HTTPS_PORT"
sed 's/^/    /' "$W/server.err"
narrate "A self-signed certificate was made for localhost; curl trusts it with --cacert (no -k)."

say "3. Requests"
DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer \$READER'"
request 200 "A read:all key reads the projects" "$BASE/v1/projects" -H "Authorization: Bearer $READER"
DISPLAY_ARGS="$BASE/v1/projects"
request 401 "No Authorization header: 401, a bare challenge (no error code)" "$BASE/v1/projects"
DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer garbage'"
request 401 "A garbage key: 401 invalid_token" "$BASE/v1/projects" -H "Authorization: Bearer garbage"
DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer \$PREVIEW'"
request 401 "A valid key of the preview environment on the production API: the same 401" \
  "$BASE/v1/projects" -H "Authorization: Bearer $PREVIEW"
narrate "    Garbage, unknown, revoked, expired and wrong-environment keys all get this one answer;"
narrate "    the access log (not the client) learns the real reason."
DISPLAY_ARGS="-X POST $BASE/v1/projects -H 'Authorization: Bearer \$READER' -d '{\"name\":\"billing\"}'"
request 403 "Writing with a read-only key: 403 insufficient_scope naming the scope" \
  -X POST "$BASE/v1/projects" -H "Authorization: Bearer $READER" -d '{"name":"billing"}'
DISPLAY_ARGS="-X POST $BASE/v1/projects -H 'Authorization: Bearer \$WRITER' -d '{\"name\":\"billing\"}'"
request 201 "Writing with a write:all key: created, attributed to the key's owner" \
  -X POST "$BASE/v1/projects" -H "Authorization: Bearer $WRITER" -d '{"name":"billing"}'
DISPLAY_ARGS="-X DELETE $BASE/v1/projects/3 -H 'Authorization: Bearer \$WRITER'"
request 403 "Deleting needs admin (write:all does not imply it)" \
  -X DELETE "$BASE/v1/projects/3" -H "Authorization: Bearer $WRITER"
DISPLAY_ARGS="-X DELETE $BASE/v1/projects/3 -H 'Authorization: Bearer \$ADMIN'"
request 204 "An admin key deletes it" -X DELETE "$BASE/v1/projects/3" -H "Authorization: Bearer $ADMIN"
DISPLAY_ARGS="'$BASE/v1/projects?api_key=\$READER'"
request 400 "A key in the URL: 400 invalid_request (URLs end up in logs)" \
  "$BASE/v1/projects?api_key=$READER"
DISPLAY_ARGS="http://127.0.0.1:$HTTP_PORT/v1/projects -H 'Authorization: Bearer \$READER'"
request 403 "Plain HTTP: refused before the key is even looked at" \
  "http://127.0.0.1:$HTTP_PORT/v1/projects" -H "Authorization: Bearer $READER"

say "4. Rate limit: the partner-feed key allows 3 requests per minute"
for i in 1 2 3; do
  DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer \$LIMITED'"
  request 200 "Request $i of 3" "$BASE/v1/projects" -H "Authorization: Bearer $LIMITED"
done
DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer \$LIMITED'"
request 429 "Request 4: 429 with Retry-After and the RateLimit headers" \
  "$BASE/v1/projects" -H "Authorization: Bearer $LIMITED"

say "5. Revoke from the CLI while the server runs"
show_cmd "keygate revoke $READER_ID"
kg revoke "$READER_ID" 2>&1 | sed 's/^/    /'
start=$(date +%s%N)
for _ in $(seq 500); do [[ "$(status_now "$READER")" == 401 ]] && break; sleep 0.005; done
narrate "    the running server refused the key $((($(date +%s%N) - start) / 1000000)) ms after the CLI returned"
DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer \$READER'"
request 401 "The revoked key" "$BASE/v1/projects" -H "Authorization: Bearer $READER"
show_cmd "keygate restore $READER_ID"
kg restore "$READER_ID" 2>&1 | sed 's/^/    /'
for _ in $(seq 500); do [[ "$(status_now "$READER")" == 200 ]] && break; sleep 0.005; done
DISPLAY_ARGS="$BASE/v1/projects -H 'Authorization: Bearer \$READER'"
request 200 "Restored: the same token works again" "$BASE/v1/projects" -H "Authorization: Bearer $READER"

say "6. Roll the deploy-bot key with a 3 s grace period"
show_cmd "keygate roll $WRITER_ID --grace 3s"
OLD_WRITER=$WRITER
ROLL_OUT=$(kg --json roll "$WRITER_ID" --grace 3s 2>/dev/null)
WRITER=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$ROLL_OUT")
printf '    new token %s...%s (kept in $WRITER; the old one in $OLD_WRITER)\n' "${WRITER:0:8}" \
  "${WRITER: -4}"
rolled_at=$(date +%s%N)
for _ in $(seq 500); do [[ "$(status_now "$WRITER")" == 403 ]] && break; sleep 0.005; done
DISPLAY_ARGS="-X POST $BASE/v1/projects -H 'Authorization: Bearer \$WRITER' -d '{\"name\":\"infra\"}'"
request 201 "The new token works at once" -X POST "$BASE/v1/projects" \
  -H "Authorization: Bearer $WRITER" -d '{"name":"infra"}'
DISPLAY_ARGS="-X POST $BASE/v1/projects -H 'Authorization: Bearer \$OLD_WRITER' -d '{\"name\":\"ci\"}'"
request 201 "The old token still works during the grace period" -X POST "$BASE/v1/projects" \
  -H "Authorization: Bearer $OLD_WRITER" -d '{"name":"ci"}'
elapsed_ms=$((($(date +%s%N) - rolled_at) / 1000000))
wait_ms=$((3100 - elapsed_ms))
((wait_ms > 0)) && {
  narrate "    ... waiting $wait_ms ms for the grace period to end"
  sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))"
}
DISPLAY_ARGS="-X POST $BASE/v1/projects -H 'Authorization: Bearer \$OLD_WRITER' -d '{\"name\":\"ci\"}'"
request 401 "After the grace period the old token is refused" -X POST "$BASE/v1/projects" \
  -H "Authorization: Bearer $OLD_WRITER" -d '{"name":"ci"}'

say "7. The server's access log: key ids and verdicts, never a token"
sed 's/^/    /' "$W/access.log" | tail -n 8
leaked=0
for t in "$READER" "$WRITER" "$OLD_WRITER" "$ADMIN" "$PREVIEW" "$LIMITED"; do
  grep -aqF "${t:8}" "$W/access.log" "$W/server.err" && leaked=1
done
if ((leaked)); then
  echo "    ${R}✘ a token appears in the server's output${N}"
  FAILED=$((FAILED + 1))
else
  echo "    ${G}✔ no token in the access log ($(wc -l <"$W/access.log") requests logged)${N}"
fi

say "8. Stop the server (SIGTERM)"
kill -TERM "$SERVER_PID"
for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "    ${R}✘ the server did not stop${N}"
  FAILED=$((FAILED + 1))
else
  wait "$SERVER_PID"
  rc=$?
  SERVER_PID=""
  tail -n 2 "$W/server.err" | sed 's/^/    /'
  if ((rc == 0)); then
    echo "    ${G}✔ stopped cleanly; nothing left running${N}"
  else
    echo "    ${R}✘ exit status $rc${N}"
    FAILED=$((FAILED + 1))
  fi
fi

say "9. Scaling out: two servers share the key's rate limit through Redis"
if ! command -v redis-server >/dev/null || ! "$SERVER" --help | grep -q -- --redis; then
  narrate "    skipped: no redis-server, or a server built without keygate::redis (scripts/setup.sh)"
else
  narrate "    Each server's limiter is local by default: two servers would admit 2 x 4 per minute."
  narrate "    With --redis they share one budget kept in Redis; each request is still decided from"
  narrate "    the server's own memory (Redis is asked in the background, every 2 ms at most)."
  create SHARED shared-feed production --scope read:all --rate 4/1m
  show_cmd "redis-server --port 0 --unixsocket redis.sock --save ''"
  redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 700 --save '' \
    --appendonly no --dir "$W" --logfile "$W/redis.log" &
  FLEET_PIDS+=($!)
  for _ in $(seq 100); do [[ -S "$W/redis.sock" ]] && break; sleep 0.05; done
  for s in a b; do
    "$SERVER" --db "$DB" --port 0 --port-file "$W/$s.ports" --write-cert "$W/$s.pem" \
      --access-log off --redis "unix://$W/redis.sock" --redis-fleet 2 2>"$W/$s.err" &
    FLEET_PIDS+=($!)
  done
  show_cmd "keygate_example_server --db keygate.db --port 0 --redis unix://redis.sock --redis-fleet 2   # twice"
  for s in a b; do
    for _ in $(seq 100); do [[ -s "$W/$s.ports" ]] && break; sleep 0.1; done
  done
  # fleet_request WANT SERVER N: request N of the shared key, on server a or b.
  fleet_request() {
    local want=$1 server=$2 n=$3 port got
    port=$(sed -n 's/^https=//p' "$W/$server.ports")
    STEP=$((STEP + 1))
    got=$(curl -s --cacert "$W/$server.pem" -o /dev/null -w '%{http_code}' \
      "https://localhost:$port/v1/projects" -H "Authorization: Bearer $SHARED")
    if [[ "$got" == "$want" ]]; then
      printf '    [%d] request %d on server %s: %s%s as expected%s\n' "$STEP" "$n" "$server" "$G" "$got" "$N"
    else
      printf '    [%d] request %d on server %s: %sexpected %s, got %s%s\n' "$STEP" "$n" "$server" \
        "$R" "$want" "${got:-no response}" "$N"
      FAILED=$((FAILED + 1))
    fi
  }
  fleet_request 200 a 1
  fleet_request 200 b 2
  fleet_request 200 a 3
  fleet_request 200 b 4
  fleet_request 429 b 5
  narrate "    The two servers admitted the key's 4 per minute between them, then 429."
  for p in "${FLEET_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${FLEET_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  FLEET_PIDS=()
fi

say "10. Scaling out: two servers on one PostgreSQL, keys managed from anywhere"
if ! pg_temp_find; then
  narrate "    skipped: $PG_TEMP_MISSING"
elif "$CLI" --db "postgresql:///keys?host=$W/none" list 2>&1 | grep -q "without PostgreSQL"; then
  narrate "    skipped: keygate was built without keygate::postgres (Debian: libpq-dev)"
else
  narrate "    A SQLite file serves the servers of one machine. For a fleet, --db takes a PostgreSQL"
  narrate "    URL: every server keeps its own Verifier, a replica in memory, and PostgreSQL tells it"
  narrate "    of each change at once (LISTEN/NOTIFY; a poll every second is the safety net)."
  show_cmd "initdb && postgres -k <dir> -c listen_addresses=''   # a throwaway PostgreSQL 15"
  if ! pg_temp_start || ! pg_temp_createdb keys; then
    echo "    ${R}✘ PostgreSQL did not start${N}"
    FAILED=$((FAILED + 1))
  else
    PG_URL=$(pg_temp_url keys)
    kgpg() { "$CLI" --db "$PG_URL" "$@"; }
    narrate "    --db 'postgresql:///keys?host=<socket dir>&user=keygate' (libpq's URI: sslmode and the"
    narrate "    other parameters pass through; a password in it is never printed)."
    show_cmd "keygate --db \$PG_URL create --name fleet-reader --owner alice --env production --scope read:all"
    out=$(kgpg --json create --name fleet-reader --owner alice --env production --scope read:all \
      2>"$W/pg_create.err")
    FLEET=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$out")
    FLEET_ID=$(sed -n 's/.*"id":"\(key_[A-Za-z0-9]*\)".*/\1/p' <<<"$out")
    printf '    %s  %s...%s  (token shown once; kept in $FLEET)\n' "$FLEET_ID" "${FLEET:0:8}" \
      "${FLEET: -4}"
    for s in pa pb; do
      "$SERVER" --db "$PG_URL" --port 0 --port-file "$W/$s.ports" --write-cert "$W/$s.pem" \
        --access-log off 2>"$W/$s.err" &
      FLEET_PIDS+=($!)
    done
    show_cmd "keygate_example_server --db \$PG_URL --port 0   # twice: servers A and B"
    for s in pa pb; do
      for _ in $(seq 100); do [[ -s "$W/$s.ports" ]] && break; sleep 0.1; done
    done
    sed -n '1p' "$W/pa.err" | sed 's/^/    /'
    # pg_status SERVER: the status of GET /v1/projects with $FLEET on server pa or pb.
    pg_status() {
      curl -s --cacert "$W/$1.pem" -o /dev/null -w '%{http_code}' \
        "https://localhost:$(sed -n 's/^https=//p' "$W/$1.ports")/v1/projects" \
        -H "Authorization: Bearer $FLEET"
    }
    # pg_request WANT SERVER WHAT: one request, counted as a step.
    pg_request() {
      local want=$1 server=$2 what=$3 got
      STEP=$((STEP + 1))
      got=$(pg_status "$server")
      if [[ "$got" == "$want" ]]; then
        printf '    [%d] %s, server %s: %s%s as expected%s\n' "$STEP" "$what" "${server#p}" "$G" \
          "$got" "$N"
      else
        printf '    [%d] %s, server %s: %sexpected %s, got %s%s\n' "$STEP" "$what" "${server#p}" \
          "$R" "$want" "${got:-no response}" "$N"
        FAILED=$((FAILED + 1))
      fi
    }
    pg_request 200 pa "the new key"
    pg_request 200 pb "the new key"
    show_cmd "keygate --db \$PG_URL revoke $FLEET_ID"
    kgpg revoke "$FLEET_ID" 2>&1 | sed 's/^/    /'
    start=$(date +%s%N)
    n=0
    for _ in $(seq 200); do n=$((n + 1)); [[ "$(pg_status pb)" == 401 ]] && break; sleep 0.005; done
    narrate "    server B refused the key at request $n after the CLI returned ($((($(date +%s%N) - start) / 1000000)) ms, curl included)"
    pg_request 401 pb "revoked through the CLI"
    pg_request 401 pa "revoked through the CLI"
    kgpg restore "$FLEET_ID" >/dev/null 2>&1
    for s in pa pb; do
      for _ in $(seq 200); do [[ "$(pg_status $s)" == 200 ]] && break; sleep 0.005; done
    done
    show_cmd "pg_ctl stop -m fast   # PostgreSQL goes down"
    pg_temp_stop
    pg_request 200 pa "PostgreSQL down, the restored key (verified from memory)"
    pg_request 200 pb "PostgreSQL down, the restored key (verified from memory)"
    show_cmd "keygate --db \$PG_URL revoke $FLEET_ID"
    if kgpg revoke "$FLEET_ID" >/dev/null 2>"$W/pg_down.err"; then
      echo "    ${R}✘ the CLI wrote to a stopped PostgreSQL${N}"
      FAILED=$((FAILED + 1))
    else
      fold -s -w 96 "$W/pg_down.err" | sed 's/^/    /'
      echo "    ${G}✔ writes fail at once while PostgreSQL is down; the servers keep serving${N}"
    fi
    show_cmd "pg_ctl start   # PostgreSQL is back; the servers were not restarted"
    show_cmd "keygate --db \$PG_URL revoke $FLEET_ID"
    if pg_temp_restart && kgpg revoke "$FLEET_ID" 2>&1 | sed 's/^/    /'; then
      start=$(date +%s%N)
      for _ in $(seq 400); do [[ "$(pg_status pb)" == 401 ]] && break; sleep 0.02; done
      narrate "    server B reconnected on its own and refused the key $((($(date +%s%N) - start) / 1000000)) ms later"
    fi
    pg_request 401 pb "PostgreSQL back, revoked through the CLI"
    for p in "${FLEET_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${FLEET_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    FLEET_PIDS=()
  fi
  pg_temp_cleanup
fi

say "11. The web console, on a copy of this database"
narrate "keygate serve: the admin API and its console over HTTPS. Sign-in is pasting an admin key,"
narrate "kept in the browser tab's memory only. The copy and its admin key stay for you to try."
CONSOLE_DIR="$(cd "$BUILD" && pwd)/demo-console"
mkdir -p "$CONSOLE_DIR"
rm -f "$CONSOLE_DIR/keygate.db" "$CONSOLE_DIR/keygate.db-wal" "$CONSOLE_DIR/keygate.db-shm"
create CONSOLE_ADMIN console-admin production --scope admin
sqlite3 "$DB" ".backup '$CONSOLE_DIR/keygate.db'"
(umask 077 && printf '%s\n' "$CONSOLE_ADMIN" >"$CONSOLE_DIR/admin-key.txt")
show_cmd "keygate --db $CONSOLE_DIR/keygate.db serve --port 0"
"$CLI" --db "$CONSOLE_DIR/keygate.db" serve --port 0 --port-file "$W/console.port" \
  --write-cert "$W/console-cert.pem" >/dev/null 2>"$W/console.err" &
CONSOLE_PID=$!
for _ in $(seq 100); do
  [[ -s "$W/console.port" ]] && break
  kill -0 "$CONSOLE_PID" 2>/dev/null || break
  sleep 0.1
done
CONSOLE_URL="https://localhost:$(cat "$W/console.port" 2>/dev/null)/admin/"
STEP=$((STEP + 1))
printf '\n%s\n' "${B}[$STEP] the console's page, then the API it calls with the admin key${N}"
show_cmd "curl $CONSOLE_URL"
page=$(curl -sS --cacert "$W/console-cert.pem" "$CONSOLE_URL" 2>&1)
me=$(curl -sS --cacert "$W/console-cert.pem" -H "Authorization: Bearer $CONSOLE_ADMIN" \
  "${CONSOLE_URL}api/v1/me" 2>&1)
if grep -q '<title>keygate console</title>' <<<"$page" && grep -q '"owner":"alice"' <<<"$me"; then
  printf '    %s✔ the console is served, and its API answers the admin key%s\n' "$G" "$N"
else
  printf '    %s✘ the console did not answer: %s%s\n' "$R" "$(head -c 300 "$W/console.err")" "$N"
  FAILED=$((FAILED + 1))
fi
kill -TERM "$CONSOLE_PID" 2>/dev/null
wait "$CONSOLE_PID" 2>/dev/null

if ((FAILED > 0)); then
  say "${R}$FAILED step(s) did not behave as expected${N}"
  exit 1
fi
say "${G}All $STEP requests answered as expected.${N}"
say "Open the console on the demo's database:"
printf '  %s$ %s --db %s serve%s\n' "$C" "$CLI" "$CONSOLE_DIR/keygate.db" "$N"
narrate "then open the URL it prints (its certificate is self-signed: accept it once) and sign in"
narrate "with the admin key in $CONSOLE_DIR/admin-key.txt."
