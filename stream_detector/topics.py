"""Small, honest Kafka look-ups shared by the demo, the benchmark and the tests."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition


def _partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() >= deadline:
            return []
        time.sleep(0.2)


def end_offsets(bootstrap: str, topic: str, timeout_s: float = 5.0) -> dict[int, int]:
    """Next offset to be written, per partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = _partitions(consumer, topic, timeout_s)
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1 where it has none). Does not join."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        out = {}
        for tp in _partitions(consumer, topic, 5.0):
            off = consumer.committed(tp)
            out[tp.partition] = -1 if off is None else off
        return out
    finally:
        consumer.close()


def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """True when the group has committed every record written so far."""
    ends = end_offsets(bootstrap, topic)
    got = committed_offsets(bootstrap, group, topic)
    return bool(ends) and all(got.get(p, -1) == end for p, end in ends.items() if end > 0)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record on `topic` now, from the beginning, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = _partitions(consumer, topic, 5.0)
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        out: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()
