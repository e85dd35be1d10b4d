"""Block until a Kafka broker answers metadata requests from a real client.

Used by deploy/kafka/kafka.sh after it launches the broker. "Port open" is not
enough: a KRaft broker accepts connections before it has registered with its
controller, and a client that connects in that window sees no brokers and
fails in confusing ways. We wait until kafka-python (the client the daemon
uses) can fetch cluster metadata listing at least one broker.

Exit status: 0 ready, 1 timed out, 2 the broker process died, 3 a different
cluster answered on that address (someone else's broker on our port).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from kafka.errors import KafkaConfigurationError, KafkaError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (exited, not yet reaped) still answers kill(0); treat as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _probe(bootstrap: str) -> tuple[str | None, int]:
    """Return (cluster_id, broker_count) or raise if the broker isn't usable."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="wait-for-kafka",
        bootstrap_timeout_ms=3000,
        request_timeout_ms=5000,
        reconnect_backoff_max_ms=500,
    )
    try:
        cluster = admin.describe_cluster()
        admin.list_topics()
        return cluster.get("cluster_id"), len(cluster.get("brokers") or [])
    finally:
        admin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True, help="host:port")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds")
    ap.add_argument("--pid", type=int, help="give up early if this process exits")
    ap.add_argument("--cluster-id", help="only accept a broker reporting this cluster id")
    args = ap.parse_args()

    # kafka-python logs every refused connection at ERROR while the broker
    # boots; that is expected here and would bury the real failure message.
    logging.basicConfig(level=logging.CRITICAL)

    deadline = time.monotonic() + args.timeout
    last_err: object = "no attempt made"
    while time.monotonic() < deadline:
        if args.pid is not None and not _alive(args.pid):
            print(f"wait_for_kafka: broker process {args.pid} exited", file=sys.stderr)
            return 2
        try:
            cluster_id, brokers = _probe(args.bootstrap)
        except KafkaConfigurationError:
            raise  # our bug, not "broker not up yet": fail now, not after the timeout
        except (KafkaError, OSError) as exc:
            last_err = f"{type(exc).__name__}: {exc}"
        else:
            if args.cluster_id and cluster_id and cluster_id != args.cluster_id:
                print(
                    f"wait_for_kafka: {args.bootstrap} is cluster {cluster_id}, "
                    f"expected {args.cluster_id}",
                    file=sys.stderr,
                )
                return 3
            if brokers > 0:
                return 0
            last_err = "metadata lists no brokers yet"
        time.sleep(0.5)
    print(
        f"wait_for_kafka: {args.bootstrap} not ready after {args.timeout:.0f}s ({last_err})",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
