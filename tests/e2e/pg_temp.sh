# shellcheck shell=bash
# A throwaway PostgreSQL server for the end-to-end tests and the demo (sourced, not run):
# initdb into a fresh temporary directory that also holds the server's Unix socket (no TCP:
# listen_addresses is empty), role `keygate` with trust authentication, UTF8, C locale.
#
#   source tests/e2e/pg_temp.sh
#   pg_temp_find || { echo "$PG_TEMP_MISSING"; exit 77; }   # binaries, and under root a user
#   trap pg_temp_cleanup EXIT          # or call pg_temp_cleanup from your own trap
#   pg_temp_start || exit 1            # $PG_TEMP_DIR: the directory (socket, data/, log)
#   pg_temp_createdb keys || exit 1
#   url=$(pg_temp_url keys)            # postgresql:///keys?host=<dir>&user=keygate
#   pg_temp_stop; pg_temp_restart      # a clean fast shutdown; a start on the same data
#
# The binaries come from $KEYGATE_PG_BINDIR, else /usr/lib/postgresql/15/bin, else the newest
# /usr/lib/postgresql/*/bin (Debian: postgresql-15, installed by scripts/setup.sh), as
# tests/postgres_server.h finds them. PostgreSQL refuses to run as root: under root, initdb and
# the server run as the `postgres` user the Debian package creates (setpriv, else runuser), and
# the directory is handed to it, mode 0755 so that root's clients reach the socket (the data
# directory inside stays 0700). Functions return non-zero with a message on stderr.

PG_TEMP_DIR=""
PG_TEMP_BINDIR=""
PG_TEMP_MISSING=""
PG_TEMP_AS=()  # the command prefix that runs a server binary as the right user

# pg_temp_find: sets PG_TEMP_BINDIR and PG_TEMP_AS; returns 1 with PG_TEMP_MISSING saying what
# is missing.
pg_temp_find() {
  local d v newest=-1 candidates=()
  if [[ -n "${KEYGATE_PG_BINDIR:-}" ]]; then
    candidates=("$KEYGATE_PG_BINDIR")
  else
    for d in /usr/lib/postgresql/*/bin; do
      v=${d#/usr/lib/postgresql/}
      v=${v%/bin}
      [[ "$v" =~ ^[0-9]+$ ]] && ((v > newest)) && newest=$v
    done
    candidates=(/usr/lib/postgresql/15/bin "/usr/lib/postgresql/$newest/bin")
  fi
  PG_TEMP_BINDIR=""
  for d in "${candidates[@]}"; do
    if [[ -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_ctl" && -x "$d/psql" ]]; then
      PG_TEMP_BINDIR=$d
      break
    fi
  done
  if [[ -z "$PG_TEMP_BINDIR" ]]; then
    PG_TEMP_MISSING="PostgreSQL server binaries (initdb, postgres, pg_ctl, psql) not found in \
${KEYGATE_PG_BINDIR:-/usr/lib/postgresql/*/bin} (Debian: postgresql-15 postgresql-contrib, \
installed by scripts/setup.sh)"
    return 1
  fi
  PG_TEMP_AS=()
  if [[ "$(id -u)" == 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
      PG_TEMP_MISSING="PostgreSQL refuses to run as root and there is no 'postgres' user to run \
it as (Debian: postgresql-15 creates it; scripts/setup.sh installs it)"
      return 1
    fi
    if command -v setpriv >/dev/null; then
      PG_TEMP_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    elif command -v runuser >/dev/null; then
      PG_TEMP_AS=(runuser -u postgres --)
    else
      PG_TEMP_MISSING="neither setpriv nor runuser (Debian: util-linux) to run PostgreSQL as \
'postgres' under root"
      return 1
    fi
  fi
  return 0
}

# pg_temp_start: a new cluster in a new temporary directory, started; waits until it accepts
# connections.
pg_temp_start() {
  [[ -n "$PG_TEMP_BINDIR" ]] || pg_temp_find || {
    echo "pg_temp: $PG_TEMP_MISSING" >&2
    return 1
  }
  # A short path: a Unix socket's path is limited to 107 bytes.
  PG_TEMP_DIR=$(mktemp -d /tmp/keygate_pg.XXXXXX) || return 1
  chmod 0755 "$PG_TEMP_DIR"
  if ((${#PG_TEMP_AS[@]} > 0)); then chown postgres:postgres "$PG_TEMP_DIR" || return 1; fi
  if ! "${PG_TEMP_AS[@]}" "$PG_TEMP_BINDIR/initdb" -D "$PG_TEMP_DIR/data" -N -U keygate \
    --auth=trust -E UTF8 --locale=C >"$PG_TEMP_DIR/initdb.log" 2>&1; then
    echo "pg_temp: initdb failed:" >&2
    tail -n 20 "$PG_TEMP_DIR/initdb.log" >&2
    return 1
  fi
  pg_temp_restart
}

# pg_temp_restart: starts the server on the existing cluster (after pg_temp_stop).
pg_temp_restart() {
  if ! "${PG_TEMP_AS[@]}" "$PG_TEMP_BINDIR/pg_ctl" -D "$PG_TEMP_DIR/data" -l "$PG_TEMP_DIR/postgres.log" \
    -w -t 60 -o "-k $PG_TEMP_DIR -c listen_addresses='' -c port=5432" start >/dev/null 2>&1; then
    echo "pg_temp: PostgreSQL did not start:" >&2
    tail -n 20 "$PG_TEMP_DIR/postgres.log" >&2
    return 1
  fi
}

# pg_temp_stop: a clean fast shutdown (open transactions roll back); waits until it is down.
pg_temp_stop() {
  [[ -n "$PG_TEMP_DIR" && -f "$PG_TEMP_DIR/data/postmaster.pid" ]] || return 0
  "${PG_TEMP_AS[@]}" "$PG_TEMP_BINDIR/pg_ctl" -D "$PG_TEMP_DIR/data" -m fast -w -t 60 stop \
    >/dev/null 2>&1
}

# pg_temp_url DB: a libpq URI for database DB as role keygate, through the socket.
pg_temp_url() {
  printf 'postgresql:///%s?host=%s&port=5432&user=keygate\n' "$1" "$PG_TEMP_DIR"
}

# pg_temp_psql DB SQL: runs SQL in DB, prints the rows (unaligned, tuples only).
pg_temp_psql() {
  "$PG_TEMP_BINDIR/psql" -X -A -t -q -v ON_ERROR_STOP=1 -d "$(pg_temp_url "$1")" -c "$2"
}

# pg_temp_createdb DB
pg_temp_createdb() {
  pg_temp_psql postgres "CREATE DATABASE \"$1\"" >/dev/null
}

# pg_temp_cleanup: stops the server (killing it if it does not stop) and removes the directory.
pg_temp_cleanup() {
  [[ -n "$PG_TEMP_DIR" ]] || return 0
  if ! pg_temp_stop; then
    local pid
    pid=$(head -n 1 "$PG_TEMP_DIR/data/postmaster.pid" 2>/dev/null)
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
  fi
  rm -rf "$PG_TEMP_DIR"
  PG_TEMP_DIR=""
}
