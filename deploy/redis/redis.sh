#!/usr/bin/env bash
# Local Redis for tests and dev (no Docker).
#
#   deploy/redis/redis.sh install  apt-get install redis-server, only if it is missing
#   deploy/redis/redis.sh start    start on 127.0.0.1, wait for PONG
#   deploy/redis/redis.sh stop     SHUTDOWN SAVE (persists), kill fallback
#   deploy/redis/redis.sh status   "running ..." (exit 0) or "stopped" (exit 3)
#
# Environment:
#   REDIS_PORT  default 6379
#   REDIS_DIR   state dir (AOF/RDB, log, pid), default .run/redis-$REDIS_PORT
#
# Persistence is on (appendonly yes, fsync everysec, plus an RDB on shutdown):
# the threshold store must survive a Redis restart, and the tests check that.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DIR="$(realpath -m -- "${REDIS_DIR:-$ROOT/.run/redis-$REDIS_PORT}")"
PID_FILE="$REDIS_DIR/redis.pid"
LOG_FILE="$REDIS_DIR/redis.log"

log() { echo "redis.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# Echo the pid of *our* redis-server (the one using this dir's pid file and
# port), or nothing. Guards against stale pid files whose pid was reused: we
# must never signal a process we did not start.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid exe
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    exe="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    # redis-server rewrites its argv to "redis-server 127.0.0.1:PORT".
    if [[ "$exe" =~ redis-server\ [^\ ]*:${REDIS_PORT}(\ |$) ]]; then
        echo "$pid"
    fi
}

cmd_install() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return 0
    fi
    log "installing redis-server with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
}

cmd_start() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        log "already running (pid $pid, 127.0.0.1:$REDIS_PORT, dir $REDIS_DIR)"
        return 0
    fi
    command -v redis-server >/dev/null || die "redis-server not found (run: $0 install)"
    # A foreign server on the port would answer our PING and fake success.
    if cli ping >/dev/null 2>&1; then
        die "something already answers on 127.0.0.1:$REDIS_PORT"
    fi
    mkdir -p "$REDIS_DIR"
    rm -f "$PID_FILE"
    # Everything on the command line (no config file): the Debian default
    # config would write to /var/lib/redis. AOF (fsync every second) is what
    # makes acknowledged writes survive a crash; RDB snapshots stay on as well
    # so `SHUTDOWN SAVE` leaves a compact dump that loads fast.
    redis-server \
        --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
        --dir "$REDIS_DIR" --daemonize yes \
        --pidfile "$PID_FILE" --logfile "$LOG_FILE" \
        --appendonly yes --appendfsync everysec \
        --save "60 1" \
        || { tail -n 20 "$LOG_FILE" >&2 2>/dev/null || true; die "redis-server failed to start"; }

    local i
    for ((i = 0; i < 100; i++)); do
        if [[ "$(cli ping 2>/dev/null || true)" == "PONG" ]]; then
            log "ready: 127.0.0.1:$REDIS_PORT (pid $(cat "$PID_FILE" 2>/dev/null || echo ?), dir $REDIS_DIR)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$LOG_FILE" >&2 2>/dev/null || true
    die "redis did not answer PING within 10 s"
}

cmd_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    # SHUTDOWN SAVE flushes the AOF and writes an RDB before exiting, so all
    # acknowledged writes survive. The connection drops, hence `|| true`.
    cli shutdown save >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SHUTDOWN; sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        echo "running (pid $pid, 127.0.0.1:$REDIS_PORT, dir $REDIS_DIR)"
        return 0
    fi
    echo "stopped"
    return 3
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 install|start|stop|status" >&2
        exit 2
        ;;
esac
