#!/usr/bin/env bash
# Project-local services for the demo and the tests: a Mosquitto broker and a
# PostgreSQL cluster with TimescaleDB preloaded, on non-default ports, with all
# their state under one ignored directory ($TRACE_SERVICES_DIR, default .services/).
#
#   deploy/services.sh up      install what is missing, start both, print `export` lines
#   deploy/services.sh down    stop both (data is kept)
#   deploy/services.sh status  say what runs
#   deploy/services.sh env     print the `export` lines only
#   deploy/services.sh standby up|down|status
#                              a streaming-replication standby of that PostgreSQL (hot
#                              standby, for the API's reads: TRACE_READ_DATABASE_URL) on
#                              $TRACE_SERVICES_STANDBY_PORT (default 55433); `up` prints its
#                              `export` line. `down` stops it too.
#
# Idempotent: a second `up` finds everything installed and running and changes nothing.
# Never touches the machine's default PostgreSQL cluster or its apt sources.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
state=${TRACE_SERVICES_DIR:-$root/.services}
build_dir=$state/build

# PostgreSQL and Mosquitto run as their own system users when we are root; if the checkout
# sits below a folder those users cannot enter (a private home), keep the state in a
# per-checkout folder under /var/lib instead of loosening the machine's permissions.
choose_state() {
  if [ -z "${TRACE_SERVICES_DIR:-}" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
     && ! runuser -u postgres -- test -x "$root" 2>/dev/null; then
    state=/var/lib/lot-trace/services-$(printf '%s' "$root" | sha1sum | cut -c1-12)
  fi
}
mqtt_port=${TRACE_SERVICES_MQTT_PORT:-18830}
pg_port=${TRACE_SERVICES_PG_PORT:-55432}
standby_port=${TRACE_SERVICES_STANDBY_PORT:-55433}
pg_user=trace
pg_db=${TRACE_SERVICES_DB:-traceability}
# TimescaleDB release built where the OS ships no binary package (Debian 12):
# the one Debian trixie carries, which the field notes record as building here.
tsdb_suite=trixie

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# Who listens on TCP port $1 (any address): "NAME (pid N): COMMAND LINE", or nothing.
port_user() {
  local line pid
  if command -v ss >/dev/null; then
    line=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1)
    [ -n "$line" ] || return 0
    pid=$(printf '%s' "$line" | sed -nE 's/.*users:\(\("[^"]*",pid=([0-9]+).*/\1/p')
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
      echo "$(cat "/proc/$pid/comm") (pid $pid): $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-200 | sed 's/ *$//')"
    else
      echo "a process this user cannot see (as root: ss -ltnp 'sport = :$1')"
    fi
  elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "a process (install iproute2's ss to see which)"
  fi
}

# Stop here, naming the holder and the setting, when port $1 is taken (what: $2, setting: $3).
port_free_or_die() {
  local who free=$(($1 + 1))
  who=$(port_user "$1")
  [ -z "$who" ] && return 0
  while [ -n "$(port_user "$free")" ] || [ "$free" = "$pg_port" ] || [ "$free" = "$mqtt_port" ]; do
    free=$((free + 1))
  done
  die "$2 cannot listen on 127.0.0.1:$1: the port is taken by $who. Stop that process, or move $2 to a free port: export $3=$free (and run the same command again)"
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $* (install it by hand or run as root)"; fi
}

# The newest PostgreSQL server installed, or empty.
pg_version() {
  local v
  v=$(ls -1 /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n1 || true)
  [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/postgres" ] && echo "$v" || true
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

apt_updated=0
apt_install() {
  local need
  need=$(missing_packages "$@")
  [ -z "$need" ] && return 0
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing: $(echo $need)"
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
}

# The Debian archive this machine already uses, so the source build asks no other host.
debian_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "cannot find this machine's Debian mirror in /etc/apt; add one or install postgresql-<ver>-timescaledb yourself"
  echo "$uri"
}

install_timescaledb() {
  local v=$1 libdir sharedir
  libdir=$("/usr/lib/postgresql/$v/bin/pg_config" --pkglibdir 2>/dev/null || echo "/usr/lib/postgresql/$v/lib")
  sharedir=/usr/share/postgresql/$v
  if [ -f "$libdir/timescaledb.so" ] && ls "$sharedir/extension/timescaledb--"*.sql >/dev/null 2>&1; then
    return 0
  fi
  # Debian 13 and later ship it as a binary package.
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  if apt-cache show "postgresql-$v-timescaledb" >/dev/null 2>&1; then
    apt_install "postgresql-$v-timescaledb"
    return 0
  fi
  log "no postgresql-$v-timescaledb package here: building TimescaleDB (Apache edition) from Debian $tsdb_suite's source package"
  apt_install "postgresql-server-dev-$v" cmake make gcc dpkg-dev libssl-dev libkrb5-dev
  local b=$build_dir/timescaledb apt_opts
  mkdir -p "$b/etc/sources.list.d" "$b/lists/partial" "$b/src"
  echo "deb-src $(debian_mirror) $tsdb_suite main" >"$b/etc/sources.list"
  # A private apt configuration: the machine's own sources and lists stay untouched.
  apt_opts=(-o "Dir::Etc::SourceList=$b/etc/sources.list" -o "Dir::Etc::SourceParts=$b/etc/sources.list.d"
            -o "Dir::State::Lists=$b/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
  apt-get "${apt_opts[@]}" update -qq
  rm -rf "$b/src"/*
  (cd "$b/src" && apt-get "${apt_opts[@]}" source -qq timescaledb >/dev/null)
  local srcdir
  srcdir=$(find "$b/src" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -n1)
  [ -n "$srcdir" ] || die "apt-get source timescaledb produced no source tree under $b/src"
  (cd "$srcdir" \
    && ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
         -DLINTER=OFF -DPG_CONFIG="/usr/lib/postgresql/$v/bin/pg_config" >"$b/bootstrap.log" 2>&1 \
    && cd build && make -j"$(nproc)" >"$b/make.log" 2>&1 && as_root make install >>"$b/make.log" 2>&1) \
    || die "TimescaleDB build failed; see $b/bootstrap.log and $b/make.log"
  log "TimescaleDB installed into $libdir"
}

ensure_installed() {
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
  local v
  v=$(pg_version)
  if [ -z "$v" ]; then apt_install postgresql; v=$(pg_version); fi
  [ -n "$v" ] || die "PostgreSQL server not found under /usr/lib/postgresql after install"
  install_timescaledb "$v"
}

# PostgreSQL refuses to run as root: run it as the `postgres` system user then.
pg_run() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_dir() { echo "$state/postgres"; }

start_postgres() {
  local v bin data sock
  v=$(pg_version); bin=/usr/lib/postgresql/$v/bin
  data=$(pg_dir)/data; sock=$(pg_dir)/run
  mkdir -p "$(pg_dir)" "$sock"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$(pg_dir)"
    runuser -u postgres -- test -x "$state" \
      || die "user postgres cannot reach $state; make its parent folders world-searchable (chmod o+x) or set TRACE_SERVICES_DIR"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb $data"
    pg_run "$bin/initdb" -D "$data" -U "$pg_user" --auth=trust -E UTF8 --locale=C.UTF-8 >"$(pg_dir)/initdb.log" 2>&1 \
      || die "initdb failed; see $(pg_dir)/initdb.log"
  fi
  if pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    release_stale_standby_slot
    return 0
  fi
  port_free_or_die "$pg_port" PostgreSQL TRACE_SERVICES_PG_PORT
  log "starting PostgreSQL $v on 127.0.0.1:$pg_port"
  pg_run "$bin/pg_ctl" -D "$data" -w -t 60 -l "$(pg_dir)/postgres.log" \
    -o "-p $pg_port -k $sock -c listen_addresses=127.0.0.1 -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off -c max_connections=200 -c max_slot_wal_keep_size=1GB" \
    start >/dev/null || die "PostgreSQL did not start: $(tail -n 2 "$(pg_dir)/postgres.log" 2>/dev/null | tr '\n' ' ')(see $(pg_dir)/postgres.log)"
  if ! pg_run "$bin/psql" -h "$sock" -p "$pg_port" -U "$pg_user" -d postgres -tAc \
      "select 1 from pg_database where datname = '$pg_db'" | grep -q 1; then
    pg_run "$bin/createdb" -h "$sock" -p "$pg_port" -U "$pg_user" "$pg_db"
  fi
  release_stale_standby_slot
}

stop_postgres() {
  local v data
  v=$(pg_version); data=$(pg_dir)/data
  [ -n "$v" ] && [ -f "$data/PG_VERSION" ] || return 0
  if pg_run "/usr/lib/postgresql/$v/bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    pg_run "/usr/lib/postgresql/$v/bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    log "PostgreSQL stopped"
  fi
}

mq_dir() { echo "$state/mosquitto"; }
mq_bin() { command -v mosquitto || echo /usr/sbin/mosquitto; }

mq_running() {
  local pid
  pid=$(cat "$(mq_dir)/mosquitto.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# The local broker's own collector identity, made on first start: its password in clear
# (for the `export` lines, outside the broker's folder) and, in Mosquitto's formats, the
# base password and ACL files that `tracectl edge add` renders ahead of the registry's.
local_collector=collector-local
mq_secret() { echo "$state/mqtt-collector.password"; }

ensure_mosquitto_identity() {
  local d=$1
  if [ ! -s "$(mq_secret)" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$(mq_secret)")
  fi
  if [ ! -s "$d/base.passwd" ] || [ "$(mq_secret)" -nt "$d/base.passwd" ]; then
    local pw_bin
    pw_bin=$(command -v mosquitto_passwd || echo /usr/bin/mosquitto_passwd)
    rm -f "$d/base.passwd"
    (umask 027; "$pw_bin" -b -c "$d/base.passwd" "$local_collector" "$(cat "$(mq_secret)")")
  fi
  {
    echo "# The local services' own collector identity (deploy/services.sh): a collector's rules."
    echo "user $local_collector"
    echo "topic read trace/v1/edges/+/data/+"
    echo "topic read trace/v1/edges/+/status"
    echo "topic write trace/v1/edges/+/ack"
    echo "topic write trace/v1/collectors/$local_collector/status"
  } >"$d/base.acl"
  # Until `tracectl` renders them from a registry, the broker knows only the base identity.
  [ -s "$d/passwd" ] || cp "$d/base.passwd" "$d/passwd"
  [ -s "$d/acl" ] || cp "$d/base.acl" "$d/acl"
  chmod 0640 "$d/passwd" "$d/acl" "$d/base.passwd" "$d/base.acl"
}

start_mosquitto() {
  local d changed=0
  d=$(mq_dir)
  mkdir -p "$d/data"
  ensure_mosquitto_identity "$d"
  # Written every time from deploy/mosquitto/local.conf so that a config change takes effect.
  sed -e "s|@PORT@|$mqtt_port|g" -e "s|@DIR@|$d|g" "$here/mosquitto/local.conf" >"$d/mosquitto.conf.new"
  if [ "$(id -u)" = 0 ]; then
    echo "user mosquitto" >>"$d/mosquitto.conf.new"
  fi
  cmp -s "$d/mosquitto.conf.new" "$d/mosquitto.conf" || changed=1
  mv "$d/mosquitto.conf.new" "$d/mosquitto.conf"
  if [ "$(id -u)" = 0 ]; then
    chown -R mosquitto: "$d" 2>/dev/null || true
  fi
  if mq_running; then
    [ "$changed" = 0 ] && return 0
    log "Mosquitto's configuration changed: restarting it"
    stop_mosquitto
    local i
    for i in $(seq 1 50); do mq_running || break; sleep 0.1; done
  fi
  port_free_or_die "$mqtt_port" Mosquitto TRACE_SERVICES_MQTT_PORT
  log "starting Mosquitto on 127.0.0.1:$mqtt_port"
  "$(mq_bin)" -c "$d/mosquitto.conf" -d
  local i
  for i in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "Mosquitto did not listen on $mqtt_port; see $d/mosquitto.log"
}

stop_mosquitto() {
  if mq_running; then
    kill "$(cat "$(mq_dir)/mosquitto.pid")"
    log "Mosquitto stopped"
  fi
}

# ---- The read standby: a physical copy of the cluster kept current by streaming
# replication, answering read-only queries (hot standby). Its own role and slot on the
# primary: the slot keeps the WAL the standby has not received yet while it runs.
# A slot also keeps the xmin the standby's hot_standby_feedback last reported, and keeps
# it after the standby is gone: no dead row anywhere in the cluster can then be cleaned,
# and the rollups' upserts, which update the same rows many times a minute, walk ever
# longer chains of dead versions (measured: 99-186 us an upserted row instead of 29, ingest
# at half speed). So a standby that is not running gives its slot up (and its copy, which
# the next `standby up` makes again in seconds), and the primary caps what a slot may keep
# (max_slot_wal_keep_size).
standby_dir() { echo "$state/postgres-standby"; }
standby_role=trace_replication
standby_slot=trace_standby

standby_running() {
  local v
  v=$(pg_version)
  [ -n "$v" ] && [ -f "$(standby_dir)/data/PG_VERSION" ] \
    && pg_run "/usr/lib/postgresql/$v/bin/pg_ctl" -D "$(standby_dir)/data" status >/dev/null 2>&1
}

start_standby() {
  local v bin data sock psql
  v=$(pg_version); bin=/usr/lib/postgresql/$v/bin
  data=$(standby_dir)/data; sock=$(standby_dir)/run
  [ "$standby_port" != "$pg_port" ] || die "TRACE_SERVICES_STANDBY_PORT ($standby_port) is the primary's port: choose another"
  mkdir -p "$(standby_dir)" "$sock"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$(standby_dir)"; fi
  psql=(pg_run "$bin/psql" -h "$(pg_dir)/run" -p "$pg_port" -U "$pg_user" -d postgres -v ON_ERROR_STOP=1 -qtA)
  # Idempotent on the primary: the role may only replicate, the slot is made once.
  "${psql[@]}" -c "do \$\$ begin
      if not exists (select 1 from pg_roles where rolname = '$standby_role') then
        create role $standby_role with login replication;
      end if;
    end \$\$" >/dev/null || die "cannot create the replication role on the primary"
  if ! "${psql[@]}" -c "select 1 from pg_replication_slots where slot_name = '$standby_slot'" | grep -q 1; then
    "${psql[@]}" -c "select pg_create_physical_replication_slot('$standby_slot')" >/dev/null \
      || die "cannot create replication slot $standby_slot on the primary"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "pg_basebackup of 127.0.0.1:$pg_port into $data"
    rm -rf "$data"
    # -R: standby.signal and primary_conninfo (with the slot) written into the copy.
    pg_run "$bin/pg_basebackup" -h 127.0.0.1 -p "$pg_port" -U "$standby_role" -D "$data" \
      -R -S "$standby_slot" -X stream -c fast >"$(standby_dir)/basebackup.log" 2>&1 \
      || die "pg_basebackup failed; see $(standby_dir)/basebackup.log"
  fi
  standby_running && return 0
  log "starting PostgreSQL $v standby on 127.0.0.1:$standby_port (replicating 127.0.0.1:$pg_port)"
  # hot_standby_feedback: a long trace on the standby is not cancelled when the primary
  # vacuums rows it still reads (the primary keeps them a little longer instead).
  pg_run "$bin/pg_ctl" -D "$data" -w -t 60 -l "$(standby_dir)/postgres.log" \
    -o "-p $standby_port -k $sock -c listen_addresses=127.0.0.1 -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off -c max_connections=200 -c hot_standby=on -c hot_standby_feedback=on" \
    start >/dev/null || die "the PostgreSQL standby did not start; see $(standby_dir)/postgres.log"
}

stop_standby() {
  if standby_running; then
    pg_run "/usr/lib/postgresql/$(pg_version)/bin/pg_ctl" -D "$(standby_dir)/data" -m fast -w stop >/dev/null
    log "PostgreSQL standby stopped"
  fi
  release_stale_standby_slot
}

# The standby's slot, when no standby runs: dropped, with the standby's copy (see above).
release_stale_standby_slot() {
  local v
  v=$(pg_version)
  standby_running && return 0
  pg_run "/usr/lib/postgresql/$v/bin/pg_ctl" -D "$(pg_dir)/data" status >/dev/null 2>&1 || return 0
  if pg_run "/usr/lib/postgresql/$v/bin/psql" -h "$(pg_dir)/run" -p "$pg_port" -U "$pg_user" -d postgres -qtA \
      -c "select pg_drop_replication_slot(slot_name), 'released' from pg_replication_slots
          where slot_name = '$standby_slot' and not active" | grep -q .; then
    rm -rf "$(standby_dir)/data"
    log "replication slot $standby_slot released (no standby runs; the next \`standby up\` copies anew)"
  fi
}

standby_command() {
  case "${1:-}" in
    up)
      ensure_installed
      choose_state
      mkdir -p "$state"
      start_postgres
      start_standby
      echo "export TRACE_READ_DATABASE_URL=postgresql://$pg_user@127.0.0.1:$standby_port/$pg_db"
      ;;
    down) stop_standby ;;
    status)
      if standby_running; then echo "postgres standby: running on $standby_port"
      else echo "postgres standby: stopped"; fi
      ;;
    *) die "usage: $0 standby up|down|status" ;;
  esac
}

print_env() {
  local d
  d=$(mq_dir)
  cat <<ENV
export TRACE_MQTT_HOST=127.0.0.1
export TRACE_MQTT_PORT=$mqtt_port
export TRACE_MQTT_USERNAME=$local_collector
export TRACE_MQTT_PASSWORD=$(cat "$(mq_secret)" 2>/dev/null)
export TRACE_BROKER_PASSWORD_FILE=$d/passwd
export TRACE_BROKER_ACL_FILE=$d/acl
export TRACE_BROKER_PID_FILE=$d/mosquitto.pid
export TRACE_BROKER_BASE_PASSWORD_FILE=$d/base.passwd
export TRACE_BROKER_BASE_ACL_FILE=$d/base.acl
export TRACE_DATABASE_URL=postgresql://$pg_user@127.0.0.1:$pg_port/$pg_db
ENV
}

[ "${1:-up}" = up ] || choose_state
case "${1:-up}" in
  up)
    ensure_installed
    choose_state
    mkdir -p "$state"
    start_postgres
    start_mosquitto
    print_env
    ;;
  down) stop_mosquitto; stop_standby; stop_postgres ;;
  status)
    mq_running && echo "mosquitto: running on $mqtt_port" || echo "mosquitto: stopped"
    v=$(pg_version)
    if [ -n "$v" ] && pg_run "/usr/lib/postgresql/$v/bin/pg_ctl" -D "$(pg_dir)/data" status >/dev/null 2>&1; then
      echo "postgres: running on $pg_port"; else echo "postgres: stopped"; fi
    ;;
  env) print_env ;;
  standby) standby_command "${2:-}" ;;
  *) die "usage: $0 up|down|status|env|standby up|down|status" ;;
esac
