#!/usr/bin/env bash
# Local single-node Kafka (KRaft, no ZooKeeper, no Docker) for tests and dev.
#
#   deploy/kafka/kafka.sh fetch    download broker jars once into .cache/kafka/libs
#   deploy/kafka/kafka.sh start    format (first time) + start a broker, wait until usable
#   deploy/kafka/kafka.sh stop     SIGTERM, wait up to 30 s, then SIGKILL
#   deploy/kafka/kafka.sh status   "running ..." (exit 0) or "stopped" (exit 3)
#
# Environment:
#   KAFKA_PORT             client (PLAINTEXT) port, default 9092
#   KAFKA_CONTROLLER_PORT  KRaft controller port, default KAFKA_PORT+1
#   KAFKA_DIR              state dir (config, data, logs, pid), default .run/kafka-$KAFKA_PORT
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer, default 90
#   KAFKA_HEAP_OPTS        JVM heap flags, default "-Xms256m -Xmx512m"
#   KAFKA_JVM_OPTS         other JVM flags, default Kafka's own "-XX:+UseG1GC -XX:MaxGCPauseMillis=20";
#                          the test fixtures use "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
#                          (C1-only JIT: about half the CPU until ready, lower peak throughput)
#   PYTHON                 interpreter with kafka-python, default .venv/bin/python or python3
#
# The jar list comes from deploy/kafka/pom.xml (Maven resolves the broker and
# its runtime deps), so the only prerequisites are java 17+ and mvn.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

CACHE_DIR="$ROOT/.cache/kafka"
LIBS_DIR="$CACHE_DIR/libs"
MARKER="$CACHE_DIR/libs.ok"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DIR="${KAFKA_DIR:-$ROOT/.run/kafka-$KAFKA_PORT}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20}"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# Absolute state dir: the pid/config paths written at start must compare
# equal when `stop`/`status` run later from another cwd. (realpath -m works
# before the dir exists, so fetch/status don't create it as a side effect.)
KAFKA_DIR="$(realpath -m -- "$KAFKA_DIR")"
PID_FILE="$KAFKA_DIR/kafka.pid"
CONFIG="$KAFKA_DIR/server.properties"
DATA_DIR="$KAFKA_DIR/data"
LOG_DIR="$KAFKA_DIR/logs"

log() { echo "kafka.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Echo the pid of *our* broker for this KAFKA_DIR, or nothing. The cmdline
# check guards against a stale pid file whose pid was reused by an unrelated
# process: we must never signal a process we did not start.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ "$cmdline" == *"$CONFIG"* ]]; then
        echo "$pid"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_log_tail() {
    local f
    for f in "$LOG_DIR/stdout.log" "$LOG_DIR/server.log"; do
        if [[ -s "$f" ]]; then
            log "---- last 40 lines of $f ----"
            tail -n 40 "$f" >&2
        fi
    done
}

cmd_fetch() {
    # Keyed on the pom's hash so editing the pom (e.g. a version bump)
    # refetches instead of silently running stale jars.
    local want
    want="$(sha256sum "$POM" | cut -d' ' -f1)"
    if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needed once to download the Kafka jars)"
    mkdir -p "$CACHE_DIR"
    # Serialise concurrent fetches (parallel test sessions on one checkout).
    # The lock lives in a subshell so its fd is closed again before `start`
    # launches the JVM; an inherited fd would hold the lock for the broker's
    # whole lifetime.
    (
        flock 9
        if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$want" ]]; then
            exit 0
        fi
        log "fetching Kafka jars into $LIBS_DIR (one-off)"
        tmp="$CACHE_DIR/libs.tmp.$$"
        rm -rf "$tmp"
        # Copy into a scratch dir and swap, so an interrupted download never
        # leaves a half-populated classpath behind a valid-looking marker.
        mvn -q -B -f "$POM" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" -DincludeScope=runtime \
            || { rm -rf "$tmp"; die "mvn dependency:copy-dependencies failed"; }
        rm -rf "$LIBS_DIR"
        mv "$tmp" "$LIBS_DIR"
        echo "$want" >"$MARKER"
        log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars"
    ) 9>"$CACHE_DIR/.lock"
}

write_config() {
    # Single node acting as broker and controller. Replication factors and
    # ISR minimums are 1 because there is only one replica; internal topics
    # get few partitions because creating 50 __consumer_offsets partitions on
    # first group use is the slowest part of a fresh broker on a small box.
    cat <<EOF
# Generated by deploy/kafka/kafka.sh - edits are overwritten on start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

cmd_start() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        log "already running (pid $pid, 127.0.0.1:$KAFKA_PORT, dir $KAFKA_DIR)"
        return 0
    fi
    rm -f "$PID_FILE"
    cmd_fetch
    command -v java >/dev/null || die "java not found (Kafka 4.x needs Java 17+)"

    # Refuse to start if anything already listens on our ports: otherwise the
    # readiness probe could succeed against someone else's broker.
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        port_in_use "$p" && die "port $p on 127.0.0.1 is already in use"
    done

    mkdir -p "$DATA_DIR" "$LOG_DIR"
    local new_config
    new_config="$(write_config)"
    if [[ -f "$DATA_DIR/meta.properties" ]]; then
        # Existing state is reused (restart keeps topics and offsets), but the
        # KRaft quorum records the controller endpoint, so ports must match.
        if [[ -f "$CONFIG" ]] && ! diff -q <(echo "$new_config") "$CONFIG" >/dev/null; then
            die "$KAFKA_DIR was formatted with a different configuration (ports?); remove it or use another KAFKA_DIR"
        fi
        [[ -f "$CONFIG" ]] || echo "$new_config" >"$CONFIG"
    else
        echo "$new_config" >"$CONFIG"
        # Random cluster id: 16 random bytes, URL-safe base64 without padding,
        # the same format `kafka-storage random-uuid` prints (saves a JVM start).
        # Like Kafka's Uuid.randomUuid, redraw one that starts with '-': the argument
        # parsers here and in wait_for_kafka.py read it as an option (1 start in 64).
        local cluster_id=-
        while [[ $cluster_id == -* ]]; do
            cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        done
        # Short-lived tool: C1-only JIT and serial GC start it fastest.
        java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$LIBS_DIR/*" \
            -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
            -Dkafka.logs.dir="$LOG_DIR" \
            kafka.tools.StorageTool format --standalone \
            --config "$CONFIG" --cluster-id "$cluster_id" >"$LOG_DIR/format.log" 2>&1 \
            || { cat "$LOG_DIR/format.log" >&2; die "storage format failed"; }
    fi
    local expected_id
    expected_id="$(sed -n 's/^cluster.id=//p' "$DATA_DIR/meta.properties")"

    # shellcheck disable=SC2086  # the *_OPTS are lists of flags
    nohup java $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
        -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG" \
        </dev/null >"$LOG_DIR/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "started pid $pid on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT), dir $KAFKA_DIR"

    local rc=0
    "$PYTHON" "$ROOT/deploy/wait_for_kafka.py" \
        --bootstrap "127.0.0.1:$KAFKA_PORT" --timeout "$KAFKA_START_TIMEOUT" \
        --pid "$pid" --cluster-id "$expected_id" || rc=$?
    if [[ $rc -ne 0 ]]; then
        show_log_tail
        # Don't leave a half-started broker behind on a shared machine.
        cmd_stop || true
        die "broker failed to become ready (timeout ${KAFKA_START_TIMEOUT}s; logs in $LOG_DIR)"
    fi
    log "ready: 127.0.0.1:$KAFKA_PORT"
}

cmd_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    # SIGTERM triggers Kafka's controlled shutdown, which flushes logs and
    # writes a clean-shutdown marker so the next start skips log recovery.
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still alive after 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        echo "running (pid $pid, 127.0.0.1:$KAFKA_PORT, dir $KAFKA_DIR)"
        return 0
    fi
    echo "stopped"
    return 3
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 fetch|start|stop|status" >&2
        exit 2
        ;;
esac
