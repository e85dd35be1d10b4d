"""Malformed records of every kind, interleaved with good ones, against the running daemon."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaProducer

from stream_detector.records import DeadLetterRecord, telemetry_bytes
from tests.integration.conftest import (
    SYNTHETIC_WINDOW,
    DaemonEnv,
    group_caught_up,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.integration

PER_KIND = 1000
KINDS = ["not_json", "wrong_value_count", "non_finite", "unknown_channel", "sequence_backwards"]


def test_every_bad_record_is_dead_lettered_and_good_ones_are_scored(
    kafka_bootstrap,
    redis_url,
    kafka_topics,
    synthetic_channels,
    synthetic_checkpoint,
    start_daemon,
):
    env = DaemonEnv(
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        checkpoint=synthetic_checkpoint,
        telemetry=kafka_topics("telemetry"),
        alerts=kafka_topics("alerts"),
        dlq=kafka_topics("dlq"),
        scores=kafka_topics("scores"),
    )
    daemon = start_daemon(env)  # running before the first byte arrives: it must stay up
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    rng = np.random.default_rng(3)
    sent_bad: Counter[str] = Counter()
    good_steps = PER_KIND + 1  # the first step cannot have an older sequence number
    chans = synthetic_channels
    for step in range(good_steps):
        for ch in chans:
            row = ch.test[step : step + 1]
            key = ch.name.encode()
            producer.send(
                env.telemetry, key=key, value=telemetry_bytes(ch.name, step, float(step), row)
            )
        # One bad record of every kind per good step, keyed like good ones so they sit on
        # the same partitions between the good records.
        for kind in KINDS:
            ch = chans[int(rng.integers(len(chans)))]
            key = ch.name.encode()
            if kind == "not_json":
                value = b'{"v": 1, "channel": "' + key + b'", "values": [[0.1, 0'
            elif kind == "wrong_value_count":
                value = telemetry_bytes(ch.name, 10**9, 0.0, np.zeros((1, 3), np.float32))
            elif kind == "non_finite":
                value = json.dumps(
                    {
                        "v": 1,
                        "channel": ch.name,
                        "ts": 0.0,
                        "seq": 10**9,
                        "values": [[float("nan"), 1.0]],
                    }
                ).encode()
            elif kind == "unknown_channel":
                key = b"ghost-1"
                value = telemetry_bytes("ghost-1", step, 0.0, np.zeros((1, 2), np.float32))
            else:  # an old sequence number: the channel is already past it
                value = telemetry_bytes(ch.name, max(step - 5, 0), 0.0, ch.test[:1])
                if step == 0:
                    continue
            producer.send(env.telemetry, key=key, value=value)
            sent_bad[kind] += 1
    producer.flush()
    producer.close()

    def done() -> bool:
        return group_caught_up(kafka_bootstrap, env.group, env.telemetry)

    wait_until(done, 300, "all records consumed and committed", daemon)
    assert daemon.alive(), "the daemon must survive bad input"
    assert daemon.terminate() == 0

    dead = [
        DeadLetterRecord.model_validate_json(r.value) for r in read_topic(kafka_bootstrap, env.dlq)
    ]
    assert Counter(d.reason for d in dead) == sent_bad
    assert all(sent_bad[k] >= PER_KIND for k in KINDS), sent_bad
    # Each dead letter carries the original bytes and where they came from.
    assert all(d.original_value() and d.topic == env.telemetry and d.offset >= 0 for d in dead)

    scores = read_topic(kafka_bootstrap, env.scores)
    expected_windows = len(chans) * (good_steps - SYNTHETIC_WINDOW + 1)
    assert len(scores) == expected_windows
    stopped = daemon.wait_for_event("daemon_stopped")
    assert stopped["dead_letters"] == dict(sent_bad)
