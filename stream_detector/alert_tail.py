"""Follow the alerts topic without joining a consumer group (tailing must not steal work)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import structlog
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from pydantic import ValidationError

from stream_detector.records import AlertRecord
from stream_detector.settings import KafkaSettings

log = structlog.get_logger(__name__)


def tail_alerts(
    kafka: KafkaSettings,
    *,
    from_beginning: bool = False,
    channels: set[str] | None = None,
    max_alerts: int | None = None,
    idle_timeout_s: float | None = None,
) -> Iterator[AlertRecord]:
    """Yield alert records in arrival order until `max_alerts` or `idle_timeout_s` of silence."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id=f"{kafka.client_id}-tail",
    )
    try:
        partitions = _wait_for_partitions(consumer, kafka.alerts_topic, idle_timeout_s)
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        seen = 0
        last_activity = time.monotonic()
        while max_alerts is None or seen < max_alerts:
            polled = consumer.poll(timeout_ms=200)
            for records in polled.values():
                for rec in records:
                    last_activity = time.monotonic()
                    try:
                        alert = AlertRecord.model_validate_json(rec.value)
                    except ValidationError as exc:
                        log.warning("alert_unreadable", offset=rec.offset, error=str(exc)[:200])
                        continue
                    if channels and alert.channel not in channels:
                        continue
                    yield alert
                    seen += 1
                    if max_alerts is not None and seen >= max_alerts:
                        return
            if idle_timeout_s is not None and time.monotonic() - last_activity > idle_timeout_s:
                return
    finally:
        consumer.close()


def _wait_for_partitions(
    consumer: KafkaConsumer, topic: str, timeout_s: float | None
) -> list[TopicPartition]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if deadline is not None and time.monotonic() > deadline:
            return []
        time.sleep(0.5)
