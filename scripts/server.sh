#!/usr/bin/env bash
# A shared MLflow tracking server on PostgreSQL (`make server`, `make server-stop`, `make server-deps`).
#
#   scripts/server.sh deps    install Debian's postgresql where missing (apt-get)
#   scripts/server.sh start   PostgreSQL cluster + role + database (created if missing), then
#                             `mlflow server` with proxied artifacts; waits until it answers and
#                             prints the tracking URI. Idempotent: a running server is reused.
#   scripts/server.sh stop    stop MLflow, and PostgreSQL's cluster if this script started it
#   scripts/server.sh status  the URI when the server answers, exit 1 otherwise
#
# Why a Debian cluster (pg_ctlcluster) rather than a private initdb: it is the machine's
# service, survives the work tree, and is what a team lead already backs up. PostgreSQL refuses
# to run as root, so as root every PostgreSQL command runs as the `postgres` user (runuser), as
# another user through sudo. Settings (environment, or make variables of the same name):
#   MLFLOW_PORT (5000), PG_PORT (the cluster's own), PG_DB / PG_USER / PG_PASSWORD (emergent),
#   SERVER_DIR (.mlflow-server: log, pid, state), ARTIFACTS (SERVER_DIR/artifacts; any
#   --artifacts-destination, e.g. s3://bucket/mlflow).
set -euo pipefail

MLFLOW_PORT=${MLFLOW_PORT:-5000}
PG_DB=${PG_DB:-emergent}
PG_USER=${PG_USER:-emergent}
PG_PASSWORD=${PG_PASSWORD:-emergent}
PG_CLUSTER=${PG_CLUSTER:-main}
SERVER_DIR=$(mkdir -p "${SERVER_DIR:-.mlflow-server}" && cd "${SERVER_DIR:-.mlflow-server}" && pwd)
ARTIFACTS=${ARTIFACTS:-$SERVER_DIR/artifacts}
URI="http://127.0.0.1:$MLFLOW_PORT"

say() { echo "server: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Run as the postgres superuser (root: runuser; others: sudo).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

deps() {
  if command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    say "postgresql already installed"
  else
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  fi
}

pg_version() {
  ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1
}

mlflow_answers() {
  curl -sf --max-time 2 "$URI/health" >/dev/null 2>&1
}

start_postgres() {
  command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not installed: run 'make server-deps'"
  local version; version=$(pg_version)
  [ -n "$version" ] || die "no PostgreSQL server under /usr/lib/postgresql: run 'make server-deps'"
  if ! pg_lsclusters -h | awk -v v="$version" -v c="$PG_CLUSTER" '$1==v && $2==c {found=1} END {exit !found}'; then
    say "creating PostgreSQL cluster $version/$PG_CLUSTER"
    as_root pg_createcluster "$version" "$PG_CLUSTER" >/dev/null
  fi
  PG_PORT=${PG_PORT:-$(pg_lsclusters -h | awk -v v="$version" -v c="$PG_CLUSTER" '$1==v && $2==c {print $3}')}
  if pg_lsclusters -h | awk -v v="$version" -v c="$PG_CLUSTER" '$1==v && $2==c && $4=="online" {found=1} END {exit !found}'; then
    say "PostgreSQL $version/$PG_CLUSTER already running on port $PG_PORT"
  else
    say "starting PostgreSQL $version/$PG_CLUSTER on port $PG_PORT"
    as_root pg_ctlcluster "$version" "$PG_CLUSTER" start
    echo "$version $PG_CLUSTER" >"$SERVER_DIR/postgres.started"
  fi
  local psql=(as_postgres psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtAX)
  # Role and database, created only when missing (the password is reset to PG_PASSWORD).
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]; then
    say "creating role $PG_USER"
    "${psql[@]}" -c "CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '$PG_PASSWORD'"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    say "creating database $PG_DB"
    "${psql[@]}" -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
  fi
}

start() {
  local t0=$SECONDS
  if mlflow_answers; then
    say "MLflow already answers on $URI"
    echo "$URI"
    return
  fi
  start_postgres
  local backend="postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
  mkdir -p "$ARTIFACTS" 2>/dev/null || true
  say "starting MLflow on $URI (backend postgresql://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB, artifacts $ARTIFACTS)"
  # One light process: no job runner (it forks workers), one uvicorn worker.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nohup mlflow server \
    --backend-store-uri "$backend" --artifacts-destination "$ARTIFACTS" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    >"$SERVER_DIR/mlflow.log" 2>&1 </dev/null &
  echo $! >"$SERVER_DIR/mlflow.pid"
  local pid; pid=$(cat "$SERVER_DIR/mlflow.pid")
  for _ in $(seq 1 240); do
    if mlflow_answers; then
      say "ready in $((SECONDS - t0)) s (log: $SERVER_DIR/mlflow.log)"
      say "point the project at it: export MLFLOW_TRACKING_URI=$URI"
      echo "$URI"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$SERVER_DIR/mlflow.log" >&2; die "mlflow server exited (log above)"; }
    sleep 0.5
  done
  die "MLflow did not answer on $URI within 120 s (log: $SERVER_DIR/mlflow.log)"
}

stop() {
  local pidfile="$SERVER_DIR/mlflow.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    # setsid made the server its own process group: stop it with its uvicorn worker.
    kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 40); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.25; done
    say "MLflow stopped"
  else
    say "no MLflow server started from $SERVER_DIR is running"
  fi
  rm -f "$pidfile"
  # The cluster may serve other databases (another project, a tuning study): stop it only when
  # this script started it.
  if [ -f "$SERVER_DIR/postgres.started" ]; then
    read -r version cluster <"$SERVER_DIR/postgres.started"
    as_root pg_ctlcluster "$version" "$cluster" stop && say "PostgreSQL $version/$cluster stopped"
    rm -f "$SERVER_DIR/postgres.started"
  else
    say "PostgreSQL left running: it was already running before 'make server'"
  fi
}

status() {
  if mlflow_answers; then echo "$URI"; else say "no MLflow server answers on $URI"; exit 1; fi
}

case "${1:-}" in
  deps) deps ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 deps|start|stop|status" >&2; exit 2 ;;
esac
