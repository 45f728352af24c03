#!/usr/bin/env bash
# The HTTP benchmark of issue #5, in one run:
#
#   1. wrk against the example HTTPS server on loopback: the same handler
#      with keygate (GET /v1/projects, read:all) and without it
#      (GET /open/v1/projects), same request bytes (both carry the
#      Authorization header), alternating rounds; requests/s and p99 for
#      both, and keygate's overhead.
#   2. What users do without keygate, per request: a lookup in PostgreSQL
#      (by digest) and in Redis (GET + INCR/EXPIRE), both real servers started
#      here on loopback, each as a multiple of keygate's in-process verify
#      (bench/http/lookup_baselines.cc).
#
#   bench/http/run.sh [BUILD_DIR]        (default: build/release)
#
# Environment: DURATION (per wrk round, default 3s), ROUNDS (default 7),
# CONNECTIONS (default 32), SERVER_THREADS (default 1), JSON (write the
# results there). Needs: wrk, redis-server, PostgreSQL server binaries
# (Debian: wrk redis-server postgresql), built targets keygate_cli,
# keygate_example_server and lookup_baselines. Everything it starts is
# stopped on exit. With 2+ CPUs the example server and wrk are pinned to
# different CPUs (taskset) so they do not fight for one. Throughput numbers
# are only meaningful on an otherwise idle machine: the script prints every
# round so that interference shows.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

BUILD=${1:-build/release}
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-7}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_THREADS=${SERVER_THREADS:-1}
CLI="$BUILD/src/cli/keygate"
SERVER="$BUILD/examples/keygate_example_server"
LOOKUP=${LOOKUP:-$BUILD/bench/lookup_baselines}

for bin in "$CLI" "$SERVER"; do
  [[ -x "$bin" ]] || { echo "missing $bin: build keygate_cli and keygate_example_server"; exit 1; }
done
command -v wrk >/dev/null || { echo "missing wrk (Debian: apt-get install wrk)"; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/keygate_httpbench.XXXXXX")
chmod 755 "$W"
PIDS=()
PG_CTL="" PG_DATA="" PG_AS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  [[ -n "$PG_CTL" ]] && "${PG_AS[@]}" "$PG_CTL" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

CPUS=$(nproc)
PIN_SERVER=() PIN_CLIENT=()
if ((CPUS >= 2)) && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c 0)
  PIN_CLIENT=(taskset -c 1)
fi

echo "== keygate HTTP benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $CPUS CPUs: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1))"

# ---------------------------------------------------------------- wrk
DB="$W/keygate.db"
TOKEN=$("$CLI" --db "$DB" --json create --name bench --owner bench --env production \
  --scope read:all 2>/dev/null | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[[ "$TOKEN" == kg_* ]] || { echo "could not create a key"; exit 1; }
"${PIN_SERVER[@]}" "$SERVER" --db "$DB" --port 0 --port-file "$W/ports" --bench-routes \
  --access-log off --threads "$SERVER_THREADS" 2>"$W/server.err" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
for _ in $(seq 100); do [[ -s "$W/ports" ]] && break; sleep 0.1; done
[[ -s "$W/ports" ]] || { cat "$W/server.err"; exit 1; }
PORT=$(sed -n 's/^https=//p' "$W/ports")

# p99 in microseconds from wrk --latency output.
p99_us() {
  awk '$1 == "99%" {
         v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
         f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : 0
         printf "%.0f", v * f }' "$1"
}
rps() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }

requests() { awk '/requests in/ { print $1 }' "$1"; }
# CPU time the server's threads have run, in ns (schedstat: exact, unlike
# the 10 ms ticks of /proc/PID/stat).
server_cpu_ns() { cat /proc/"$SERVER_PID"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }

run_wrk() {  # OUT PATH: also writes OUT.cpu, the server's CPU ns per request
  local before after
  before=$(server_cpu_ns)
  "${PIN_CLIENT[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
    -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT$2" >"$1" 2>&1
  after=$(server_cpu_ns)
  grep -q "Non-2xx" "$1" && { echo "non-2xx responses on $2:"; cat "$1"; exit 1; }
  awk -v b="$before" -v a="$after" -v n="$(requests "$1")" 'BEGIN { printf "%.0f", (a - b) / n }' \
    >"$1.cpu"
}

# Warm-up (TLS sessions, caches), then alternating rounds.
"${PIN_CLIENT[@]}" wrk -t1 -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $TOKEN" \
  "https://127.0.0.1:$PORT/v1/projects" >/dev/null 2>&1
OPEN_RPS=() AUTH_RPS=() OPEN_P99=() AUTH_P99=() OPEN_CPU=() AUTH_CPU=()
for r in $(seq "$ROUNDS"); do
  run_wrk "$W/open.$r" /open/v1/projects
  run_wrk "$W/auth.$r" /v1/projects
  OPEN_RPS+=("$(rps "$W/open.$r")") OPEN_P99+=("$(p99_us "$W/open.$r")")
  AUTH_RPS+=("$(rps "$W/auth.$r")") AUTH_P99+=("$(p99_us "$W/auth.$r")")
  OPEN_CPU+=("$(cat "$W/open.$r.cpu")") AUTH_CPU+=("$(cat "$W/auth.$r.cpu")")
  printf '  round %d: without keygate %6s req/s, p99 %5s us, %5s ns CPU/req | with keygate %6s req/s, p99 %5s us, %5s ns CPU/req\n' \
    "$r" "${OPEN_RPS[-1]}" "${OPEN_P99[-1]}" "${OPEN_CPU[-1]}" "${AUTH_RPS[-1]}" "${AUTH_P99[-1]}" \
    "${AUTH_CPU[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
O_RPS=$(median "${OPEN_RPS[@]}") A_RPS=$(median "${AUTH_RPS[@]}")
O_P99=$(median "${OPEN_P99[@]}") A_P99=$(median "${AUTH_P99[@]}")
# The overhead from paired rounds (each with/without pair ran back to back,
# so load from elsewhere on the machine hits both alike): the median ratio.
PAIRS=()
for i in "${!OPEN_RPS[@]}"; do
  PAIRS+=("$(awk -v o="${OPEN_RPS[$i]}" -v a="${AUTH_RPS[$i]}" 'BEGIN { printf "%.4f", a / o }')")
done
RATIO=$(median "${PAIRS[@]}")
OVERHEAD=$(awk -v r="$RATIO" 'BEGIN { printf "%.2f", (1 - r) * 100 }')
# The same from the server's CPU time per request, which other load on the
# machine disturbs far less than throughput.
O_CPU=$(median "${OPEN_CPU[@]}") A_CPU=$(median "${AUTH_CPU[@]}")
CPU_DELTAS=()
for i in "${!OPEN_CPU[@]}"; do CPU_DELTAS+=($((AUTH_CPU[i] - OPEN_CPU[i]))); done
CPU_DELTA=$(median "${CPU_DELTAS[@]}")
CPU_OVERHEAD=$(awk -v o="$O_CPU" -v d="$CPU_DELTA" 'BEGIN { printf "%.2f", d * 100 / o }')
echo
echo "wrk, HTTPS keep-alive, $CONNECTIONS connections, $SERVER_THREADS server thread(s), median of $ROUNDS x $DURATION:"
printf '  %-28s %10s req/s   p99 %7s us   %6s ns server CPU/request\n' \
  "GET /open/v1/projects (none)" "$O_RPS" "$O_P99" "$O_CPU"
printf '  %-28s %10s req/s   p99 %7s us   %6s ns server CPU/request\n' \
  "GET /v1/projects (keygate)" "$A_RPS" "$A_P99" "$A_CPU"
printf '  throughput with/without keygate (median of paired rounds): %s' "$RATIO"
printf '  => keygate overhead %s%% of throughput (target <= 3%%)\n' "$OVERHEAD"
printf '  server CPU per request, keygate minus none (median of paired rounds): %s ns = %s%%\n' \
  "$CPU_DELTA" "$CPU_OVERHEAD"

# ------------------------------------------------------- PG and Redis
echo
if [[ ! -x "$LOOKUP" ]]; then
  echo "lookup baselines skipped: $LOOKUP not built (needs libpq-dev, libhiredis-dev)"
  exit 0
fi
LOOKUP_ARGS=(--json "$W/lookup.json")

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
if [[ -x "$PG_BIN/initdb" ]]; then
  PG_PORT=$(free_port)
  PG_DATA="$W/pg/data"
  mkdir -p "$W/pg"
  if ((EUID == 0)); then  # PostgreSQL refuses to run as root
    chown postgres "$W/pg"
    PG_AS=(runuser -u postgres --)
  fi
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres --no-sync >"$W/pg/initdb.log" 2>&1 ||
    { cat "$W/pg/initdb.log"; exit 1; }
  PG_CTL="$PG_BIN/pg_ctl"
  "${PG_AS[@]}" "$PG_CTL" -D "$PG_DATA" -l "$W/pg/log" -w -o \
    "-p $PG_PORT -k $W/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" \
    start >/dev/null || { cat "$W/pg/log"; exit 1; }
  LOOKUP_ARGS+=(--pg "host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres")
else
  echo "PostgreSQL baseline skipped: no server binaries (Debian: postgresql)"
fi

if command -v redis-server >/dev/null; then
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --daemonize no >"$W/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.1; done
  LOOKUP_ARGS+=(--redis "127.0.0.1:$REDIS_PORT")
else
  echo "Redis baseline skipped: no redis-server (Debian: redis-server)"
fi

echo "per-request key check, single thread, 4096 keys (servers on loopback TCP):"
# Not pinned: a database server pinned next to other work waits for its CPU,
# which is not what a dedicated database host does.
"$LOOKUP" "${LOOKUP_ARGS[@]}" | sed 's/^/  /' || exit 1

if [[ -n "${JSON:-}" ]]; then
  {
    printf '{"wrk":{"duration":"%s","rounds":%s,"connections":%s,"server_threads":%s,' \
      "$DURATION" "$ROUNDS" "$CONNECTIONS" "$SERVER_THREADS"
    printf '"without_keygate":{"rps":%s,"p99_us":%s},"with_keygate":{"rps":%s,"p99_us":%s},' \
      "$O_RPS" "$O_P99" "$A_RPS" "$A_P99"
    printf '"cpu_ns_per_request":{"without_keygate":%s,"with_keygate":%s,"paired_delta":%s,"overhead_percent":%s},' \
      "$O_CPU" "$A_CPU" "$CPU_DELTA" "$CPU_OVERHEAD"
    printf '"throughput_ratio":%s,"overhead_percent":%s},"lookups":' "$RATIO" "$OVERHEAD"
    cat "$W/lookup.json"
    printf '}\n'
  } >"$JSON"
  echo "results: $JSON"
fi
