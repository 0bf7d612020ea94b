#!/usr/bin/env bash
# Run a command next to a throwaway Redis and a throwaway PostgreSQL cluster.
#
#   scripts/with-services.sh .venv/bin/python -m pytest -q
#
# Installs redis-server and postgresql with apt when they are missing and we are root
# (plus chromium for the browser tests, best effort), starts both servers on free ports
# of 127.0.0.1 inside one temp dir, exports TEST_* variables describing them, runs the
# command, then always stops the servers and removes the temp dir. Exits with the
# command's exit code.
set -euo pipefail

log() { echo "with-services: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $# -gt 0 ]] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

IS_ROOT=0
[[ $EUID -eq 0 ]] && IS_ROOT=1 && PATH=$PATH:/usr/sbin:/sbin
APT_UPDATED=0

# --- installing -----------------------------------------------------------------------

wait_for_apt() {
  # Another apt/dpkg (unattended-upgrades, a provisioning step) may hold the locks.
  command -v fuser >/dev/null || return 0
  local i
  for ((i = 0; i < 150; i++)); do
    fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
      >/dev/null 2>&1 || return 0
    if ((i == 0)); then log "waiting (at most 5 minutes) for another apt/dpkg to finish"; fi
    sleep 2
  done
  log "apt/dpkg still busy after 5 minutes; trying anyway"
}

apt_install() {
  local out
  out=$(mktemp)
  wait_for_apt
  if ((APT_UPDATED == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get -qq update </dev/null >"$out" 2>&1 \
      || { cat "$out" >&2; rm -f "$out"; return 1; }
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o DPkg::Lock::Timeout=300 \
    install --no-install-recommends "$@" </dev/null >"$out" 2>&1 \
    || { tail -n 30 "$out" >&2; rm -f "$out"; return 1; }
  rm -f "$out"
}

find_pg_bindir() {
  # pg_config --bindir may name a client-only dir; Debian keeps servers per version.
  local dir candidates=()
  readarray -t candidates < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r)
  candidates+=("$(pg_config --bindir 2>/dev/null || true)")
  for dir in "${candidates[@]}"; do
    [[ -n $dir && -x $dir/postgres && -x $dir/initdb && -x $dir/pg_ctl ]] \
      && { echo "$dir"; return 0; }
  done
  return 1
}

ensure_binaries() {
  local missing=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    || missing+=(redis-server)
  find_pg_bindir >/dev/null || missing+=(postgresql)
  if ((${#missing[@]})); then
    ((IS_ROOT)) || die "missing ${missing[*]}: install them first," \
      "e.g. 'sudo apt-get install ${missing[*]}', then run this again"
    apt_install "${missing[@]}" || die "could not install ${missing[*]}"
  fi
  if ((IS_ROOT)) && [[ ! -x /usr/bin/chromium ]]; then
    apt_install chromium || log "warning: could not install chromium; browser tests will skip"
  fi
}

# --- processes -------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() {
  # kill -0 also succeeds on a zombie left for a non-reaping init; look at the state.
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

retry() {  # retry TIMES CMD...: run CMD every 0.2 s until it succeeds, at most TIMES times
  local i times=$1
  shift
  for ((i = 0; i < times; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  return 1
}

as_pg() { (cd "$PG_DIR" && "${PG_AS[@]}" "$@"); }

redis_ready() {
  # Ask for the dir so a foreign server that won a port race is not mistaken for ours.
  [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --raw config get dir 2>/dev/null | tail -n 1)" \
    == "$REDIS_DIR" ]]
}

start_redis() {
  local attempt
  for attempt in 1 2 3; do
    REDIS_PORT=$(free_port)
    cat >"$REDIS_CONF" <<EOF
bind 127.0.0.1
port $REDIS_PORT
dir $REDIS_DIR
save ""
appendonly no
daemonize yes
pidfile $REDIS_DIR/redis.pid
logfile $REDIS_DIR/redis.log
EOF
    "$REDIS_SERVER" "$REDIS_CONF" || true
    retry 50 redis_ready && return 0
    stop_redis
  done
  tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
  die "redis-server did not start"
}

stop_redis() {
  local pid i
  pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

start_postgres() {
  local attempt
  as_pg "$PG_BINDIR/initdb" --pgdata="$PG_DATADIR" --username=postgres --auth=trust \
    --encoding=UTF8 --no-locale --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  echo "include 'handson-test.conf'" | as_pg tee -a "$PG_DATADIR/postgresql.conf" >/dev/null
  for attempt in 1 2 3; do
    PG_PORT=$(free_port)
    as_pg tee "$PG_DATADIR/handson-test.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    if as_pg "$PG_BINDIR/pg_ctl" --pgdata="$PG_DATADIR" --log="$PG_LOG" --wait --timeout=60 \
      start >/dev/null && retry 50 "$PG_ISREADY" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; then
      return 0
    fi
    stop_postgres
  done
  tail -n 20 "$PG_LOG" >&2 || true
  die "PostgreSQL did not start"
}

stop_postgres() {
  local pid
  pid=$(head -n 1 "$PG_DATADIR/postmaster.pid" 2>/dev/null) || return 0
  as_pg "$PG_BINDIR/pg_ctl" --pgdata="$PG_DATADIR" --mode=immediate --wait --timeout=30 \
    stop >/dev/null 2>&1 && return 0
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  [[ -n ${REDIS_DIR:-} ]] && stop_redis
  [[ -n ${PG_DATADIR:-} ]] && stop_postgres
  [[ -n ${SERVICES_DIR:-} ]] && rm -rf "$SERVICES_DIR"
  exit "$rc"
}

# --- main ------------------------------------------------------------------------------

ensure_binaries
REDIS_SERVER=$(command -v redis-server)
PG_BINDIR=$(find_pg_bindir)
PG_ISREADY=$PG_BINDIR/pg_isready
[[ -x $PG_ISREADY ]] || PG_ISREADY=pg_isready
PG_AS=()
if ((IS_ROOT)); then
  # PostgreSQL refuses to run as root.
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
  PG_AS=(runuser -u postgres --)
fi

trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Under /tmp when root: the postgres user must be able to reach it.
base=${TMPDIR:-/tmp}
((IS_ROOT)) && base=/tmp
SERVICES_DIR=$(cd "$(mktemp -d "$base/handson-services.XXXXXX")" && pwd -P)
chmod 755 "$SERVICES_DIR"
REDIS_DIR=$SERVICES_DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf
PG_DIR=$SERVICES_DIR/pg
PG_DATADIR=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
mkdir "$REDIS_DIR" "$PG_DIR"
((IS_ROOT)) && chown postgres: "$PG_DIR"

start_redis
start_postgres

export TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export TEST_REDIS_SERVER=$REDIS_SERVER
export TEST_REDIS_CONF=$REDIS_CONF
export TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres
export TEST_PG_BINDIR=$PG_BINDIR
export TEST_PG_DATADIR=$PG_DATADIR
export TEST_PG_PORT=$PG_PORT
export TEST_PG_LOG=$PG_LOG
export TEST_PG_USER_PREFIX=${PG_AS[*]}
log "redis at $TEST_REDIS_URL, PostgreSQL ($PG_BINDIR) at $TEST_DATABASE_URL," \
  "files in $SERVICES_DIR"

# Not exec: the EXIT trap must stop the servers once the command is done.
set +e
"$@"
status=$?
set -e
exit "$status"
