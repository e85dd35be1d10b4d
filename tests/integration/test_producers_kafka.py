"""Producers against a real broker: every step arrives once, in order, on one partition, exact."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import ConsumerRecord

from producers import (
    TelemetrySender,
    TelemetrySendError,
    make_synthetic_channels,
    replay,
    send_synthetic,
)
from producers.cli import replay_command
from stream_detector.records import ParsedTelemetry, parse_telemetry

pytestmark = pytest.mark.integration

DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smap_msl"
REAL_CHANNELS = ["A-1", "P-1"]
LIMIT_STEPS = 500


def _read_topic(
    bootstrap: str, topic: str, group: str, timeout_s: float = 60.0
) -> list[ConsumerRecord]:
    """Every record in `topic`, read from the beginning up to the end offsets seen now."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, "timed out reading the topic back"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _check_channels(
    records: list[ConsumerRecord], expected: dict[str, np.ndarray], period_s: float
) -> dict[str, list[ParsedTelemetry]]:
    """Each channel: one partition, seq in offset order, every step once, values exact."""
    by_channel: dict[str, list[tuple[int, int, ParsedTelemetry]]] = defaultdict(list)
    for r in records:
        parsed = parse_telemetry(r.value)
        assert r.key == parsed.channel.encode()
        by_channel[parsed.channel].append((r.partition, r.offset, parsed))
    assert set(by_channel) == set(expected)
    result = {}
    for channel, rows in by_channel.items():
        assert len({p for p, _, _ in rows}) == 1, f"{channel} spread over several partitions"
        rows.sort(key=lambda row: row[1])
        parsed_rows = [row[2] for row in rows]
        seqs = [p.seq for p in parsed_rows]
        assert seqs == sorted(seqs), f"{channel} out of order"
        steps = np.concatenate([p.values for p in parsed_rows])
        covered = [p.seq + i for p in parsed_rows for i in range(len(p.values))]
        assert covered == list(range(len(expected[channel]))), f"{channel} lost or repeated steps"
        # float32 -> JSON float64 -> float32 is exact, so compare bit for bit.
        np.testing.assert_array_equal(steps, expected[channel])
        start_ts = parsed_rows[0].ts
        for p in parsed_rows:
            assert p.period_s == period_s
            assert p.ts == pytest.approx(start_ts + p.seq * period_s)
        result[channel] = parsed_rows
    return result


@pytest.mark.parametrize("steps_per_record", [1, 7])
def test_replay_real_channels_round_trip(
    kafka_bootstrap: str,
    kafka_topics: Callable[..., str],
    unique_group: str,
    steps_per_record: int,
):
    if not DATA_ROOT.is_dir():
        pytest.skip(f"SMAP/MSL data not found at {DATA_ROOT}")
    topic = kafka_topics("producers-replay", partitions=4)
    with TelemetrySender(kafka_bootstrap, topic) as sender:
        report = replay(
            sender,
            DATA_ROOT,
            REAL_CHANNELS,
            steps_per_record=steps_per_record,
            period_s=2.0,
            limit_steps=LIMIT_STEPS,
            progress=False,
        )
        assert sender.records_acked == sender.records_sent == report.records
        assert sender.records_failed == 0
    assert report.steps == LIMIT_STEPS * len(REAL_CHANNELS)

    records = _read_topic(kafka_bootstrap, topic, unique_group)
    assert len(records) == report.records
    expected = {c: np.load(DATA_ROOT / "test" / f"{c}.npy")[:LIMIT_STEPS] for c in REAL_CHANNELS}
    parsed = _check_channels(records, expected, period_s=2.0)
    for rows in parsed.values():
        assert {len(p.values) for p in rows[:-1]} == {steps_per_record}


def test_synthetic_round_trip(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_group: str
):
    topic = kafka_topics("producers-synthetic", partitions=4)
    channels = make_synthetic_channels(5, 600, n_features=3, seed=21)
    with TelemetrySender(kafka_bootstrap, topic) as sender:
        report = send_synthetic(sender, channels, steps_per_record=5, period_s=0.5, progress=False)
    assert report.steps == 5 * 600

    records = _read_topic(kafka_bootstrap, topic, unique_group)
    assert len(records) == report.records
    _check_channels(records, {c.name: c.test for c in channels}, period_s=0.5)


def test_paced_replay_holds_to_real_time(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_group: str
):
    topic = kafka_topics("producers-paced", partitions=2)
    channels = make_synthetic_channels(2, 400, seed=1, anomalies_per_channel=1)
    with TelemetrySender(kafka_bootstrap, topic) as sender:
        # 21 steps at 0.05 s per step (period 1 s, 20× real time): at least 1.0 s end to end.
        report = send_synthetic(
            sender, channels, speed=20.0, period_s=1.0, limit_steps=21, progress=False
        )
    assert report.seconds >= 1.0
    assert report.seconds < 5.0
    assert len(_read_topic(kafka_bootstrap, topic, unique_group)) == 2 * 21


def test_a_record_the_broker_refuses_raises_at_flush(kafka_bootstrap: str):
    # A topic whose records may not exceed 1 KiB: the broker itself rejects a bigger one,
    # so the error comes back through the delivery future, not from send().
    topic = f"producers-tiny-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "1024"})])
    admin.wait_for_topics([topic], timeout_ms=30_000)
    try:
        with TelemetrySender(kafka_bootstrap, topic) as sender:
            sender.send("big", 0, 0.0, np.zeros((200, 25), dtype=np.float32), 1.0)
            with pytest.raises(TelemetrySendError) as caught:
                sender.flush(timeout=60)
            assert caught.value.failed == 1
            assert sender.records_failed == 1
            # Once a delivery failed, further sends refuse instead of piling on.
            with pytest.raises(TelemetrySendError):
                sender.send("big", 1, 1.0, np.zeros((1, 25), dtype=np.float32), 1.0)
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_replay_cli_sends_and_prints_a_summary(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_group: str
):
    if not DATA_ROOT.is_dir():
        pytest.skip(f"SMAP/MSL data not found at {DATA_ROOT}")
    topic = kafka_topics("producers-cli", partitions=4)
    args = ["--bootstrap", kafka_bootstrap, "--topic", topic, "--data-root", str(DATA_ROOT)]
    args += ["--channel", "A-1", "--channel", "M-6", "--limit-steps", "40"]
    args += ["--steps-per-record", "4", "--no-progress"]
    result = CliRunner().invoke(replay_command, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("sent 20 records, 80 steps from 2 channels")
    assert len(_read_topic(kafka_bootstrap, topic, unique_group)) == 20
