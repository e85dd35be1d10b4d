"""Consumer-group behaviour: replicas sharing partitions, and slow scoring that must not
cost the daemon its group membership."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from producers.sender import TelemetrySender
from producers.synthetic import send_synthetic
from stream_detector.app import build_engine, ensure_topics
from stream_detector.daemon import DetectorDaemon
from stream_detector.offline import run_offline
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.thresholds.store import RedisStateStore
from tests.integration.conftest import DaemonEnv, group_caught_up, read_alerts, wait_until

pytestmark = pytest.mark.integration


def _settings(env: DaemonEnv, **kafka) -> Settings:
    return Settings(
        kafka={
            "bootstrap_servers": env.bootstrap,
            "telemetry_topic": env.telemetry,
            "alerts_topic": env.alerts,
            "dead_letter_topic": env.dlq,
            "group_id": env.group,
            **kafka,
        },
        redis={"url": env.redis_url, "key_prefix": env.key_prefix},
        model={"checkpoint": env.checkpoint, "device": "cpu"},
        threshold={"params": {"warmup": 50}},
    )


def _key(a):
    return (a.alert_id, a.revision, a.state, a.first_seq, a.last_seq)


def test_two_replicas_in_one_group_alert_exactly_like_the_offline_engine(
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
        telemetry=kafka_topics("telemetry", partitions=4),
        alerts=kafka_topics("alerts"),
        dlq=kafka_topics("dlq"),
    )
    first = start_daemon(env)
    first.wait_for_event("partitions_assigned")
    half = len(synthetic_channels[0].test) // 2
    with TelemetrySender(kafka_bootstrap, env.telemetry) as sender:
        send_synthetic(
            sender, synthetic_channels, limit_steps=half, steps_per_record=3, progress=False
        )
    second = start_daemon(env)  # joins mid-stream: the group rebalances
    second.wait_for_event("partitions_assigned")
    with TelemetrySender(kafka_bootstrap, env.telemetry) as sender:
        for ch in synthetic_channels:
            for start in range(half, len(ch.test), 3):
                sender.send(ch.name, start, float(start), ch.test[start : start + 3], 1.0)
    wait_until(
        lambda: group_caught_up(kafka_bootstrap, env.group, env.telemetry),
        180,
        "both replicas committed everything",
    )
    assert first.terminate() == 0 and second.terminate() == 0

    streamed = read_alerts(kafka_bootstrap, env.alerts)
    settings = _settings(env)
    model = ServedModel.load(synthetic_checkpoint, device="cpu")
    expected = []
    for ch in synthetic_channels:
        engine = build_engine(settings, model)
        engine.emit_scores = True
        expected += run_offline(engine, ch.name, ch.test, steps_per_record=3).alerts
    assert expected, "the offline engine must alert for the comparison to mean anything"
    assert {_key(a) for a in streamed} == {_key(a) for a in expected}


class _SlowModel:
    """Wraps a model so every scoring call takes `delay` seconds, like a busy GPU."""

    def __init__(self, inner: ServedModel, delay: float) -> None:
        self._inner = inner
        self._delay = delay
        self.window, self.stride = inner.window, inner.stride
        self.n_features, self.channels = inner.n_features, inner.channels
        self.model_info, self.score_prior = inner.model_info, inner.score_prior

    def score_raw(self, windows):
        time.sleep(self._delay)
        return self._inner.score_raw(windows)


def test_scoring_longer_than_max_poll_interval_keeps_membership(
    kafka_bootstrap,
    redis_url,
    kafka_topics,
    synthetic_channels,
    synthetic_checkpoint,
):
    env = DaemonEnv(
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        checkpoint=synthetic_checkpoint,
        telemetry=kafka_topics("telemetry", partitions=2),
        alerts=kafka_topics("alerts"),
        dlq=kafka_topics("dlq"),
    )
    settings = _settings(
        env,
        max_poll_interval_ms=10_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_records=5_000,
    )
    settings.batching.max_batch_size = 32
    ensure_topics(settings.kafka)
    model = _SlowModel(ServedModel.load(synthetic_checkpoint, device="cpu"), delay=0.4)
    store = RedisStateStore(
        redis.Redis.from_url(redis_url), env.key_prefix, model.model_info.version
    )
    daemon = DetectorDaemon(build_engine(settings, model), store, settings.kafka, max_wait_ms=50)
    with TelemetrySender(kafka_bootstrap, env.telemetry) as sender:
        # ~1,300 windows per flush at 32 a call and 0.4 s a call: ~16 s, beyond the 10 s limit.
        send_synthetic(
            sender, synthetic_channels, limit_steps=480, steps_per_record=10, progress=False
        )
    worker = threading.Thread(target=daemon.run, kwargs={"max_seconds": 120}, daemon=True)
    worker.start()
    try:
        wait_until(
            lambda: group_caught_up(kafka_bootstrap, env.group, env.telemetry),
            110,
            "the slow daemon committed everything",
        )
    finally:
        daemon.request_stop()
        worker.join(timeout=60)
    assert daemon.stats.windows == 3 * (480 - 32 + 1)
    assert daemon.stats.keepalive_polls >= 2, "the flush outlasted half the poll interval"
