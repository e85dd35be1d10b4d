"""Smoke tests for the test infrastructure itself.

If these fail, every other integration/e2e failure is noise: they prove the
conftest fixtures hand out a real, usable Kafka broker and Redis server with
the semantics the daemon relies on (acks=all produce, manual commits,
Lua scripting, persistence across a restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.integration

N_MESSAGES = 100


def test_kafka_produce_consume_commit(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_group: str
) -> None:
    topic = kafka_topics("services-smoke", partitions=4)

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        futures = [
            producer.send(topic, key=str(i % 7).encode(), value=f"msg-{i}".encode())
            for i in range(N_MESSAGES)
        ]
        producer.flush(timeout=30)
        # .get() raises if the broker rejected a record, so "sent" means acked.
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    assert {m.topic for m in metas} == {topic}

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < N_MESSAGES and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                values.extend(r.value for r in records)
        assert sorted(values) == sorted(f"msg-{i}".encode() for i in range(N_MESSAGES))

        consumer.commit()  # synchronous: returns once the coordinator stored it
        partitions = consumer.assignment()
        end_offsets = consumer.end_offsets(list(partitions))
        for tp in partitions:
            assert consumer.committed(tp) == end_offsets[tp]
    finally:
        consumer.close()

    # Independently of the consumer's own view: the group's committed offsets
    # as stored by the broker add up to everything we produced.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        committed = admin.list_group_offsets({unique_group: None})[unique_group]
    finally:
        admin.close()
    assert set(committed) == {TopicPartition(topic, p) for p in range(4)}
    assert sum(om.offset for om in committed.values()) == N_MESSAGES


def test_topics_are_unique_per_call(kafka_topics: Callable[..., str]) -> None:
    a = kafka_topics("same prefix/with junk")
    b = kafka_topics("same prefix/with junk")
    assert a != b
    assert all(c.isalnum() or c in "._-" for c in a)


def test_redis_set_get_eval(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.ping()
        r.set("sd-test:services:k", "v1")
        assert r.get("sd-test:services:k") == b"v1"
        # The threshold store is Lua-based; prove scripting is available.
        assert (
            r.eval("return redis.call('GET', KEYS[1]) .. ARGV[1]", 1, "sd-test:services:k", "-ok")
            == b"v1-ok"
        )
    finally:
        r.close()


def test_redis_state_survives_restart(redis_server) -> None:
    key = "sd-test:services:persist"
    r = redis.Redis.from_url(redis_server.url)
    try:
        r.set(key, "kept")
        r.hset(f"{key}:h", mapping={"mean": "1.5", "std": "0.25"})
    finally:
        r.close()

    redis_server.restart()

    r = redis.Redis.from_url(redis_server.url)
    try:
        assert r.get(key) == b"kept"
        assert r.hgetall(f"{key}:h") == {b"mean": b"1.5", b"std": b"0.25"}
    finally:
        r.close()
