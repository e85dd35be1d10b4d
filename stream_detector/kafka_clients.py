"""The Kafka clients every long-running command builds the same way, and their stop switch.

One place for what kafka-python's defaults get wrong for us: auto-commit off (offsets move
only after the work they stand for is done), an explicit reset policy, bounded polls, and
acks from all in-sync replicas on what we publish.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer

from stream_detector.settings import KafkaSettings

log = structlog.get_logger(__name__)


def group_consumer(
    kafka: KafkaSettings,
    *,
    group_id: str,
    client_id: str,
    factory: Callable[..., KafkaConsumer] = KafkaConsumer,
) -> KafkaConsumer:
    """A consumer-group member that never commits on its own."""
    return factory(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group_id,
        group_instance_id=kafka.group_instance_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset=kafka.auto_offset_reset,
        max_poll_records=kafka.max_poll_records,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
    )


def acked_producer(
    kafka: KafkaSettings,
    *,
    client_id: str,
    factory: Callable[..., KafkaProducer] = KafkaProducer,
    **overrides: Any,
) -> KafkaProducer:
    """A producer whose sends count only once every in-sync replica has them."""
    return factory(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=client_id,
        acks="all",
        retries=5,
        **overrides,
    )


def await_partitions(
    consumer: KafkaConsumer, topic: str, stop: threading.Event, timeout_s: float = 15.0
) -> bool:
    """Learn `topic`'s partitions before the first poll joins the group.

    A member that joins before its metadata knows the topic is assigned nothing and sits
    idle until the next metadata refresh (minutes by default) — seen here with topics
    created just before start.
    """
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if consumer.partitions_for_topic(topic):
            return True
        if time.monotonic() >= deadline:
            log.warning("topic_partitions_unknown", topic=topic, waited_s=timeout_s)
            return False
        stop.wait(0.2)
    return False


class StopSwitch:
    """SIGTERM/SIGINT ask a loop to finish its work and return, never to die mid-batch."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name if signum else None)
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
