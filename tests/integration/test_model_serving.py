"""Every registered detector, trained briefly, scores a synthetic stream through Kafka."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from producers.sender import TelemetrySender
from producers.synthetic import make_synthetic_channels, send_synthetic
from stream_detector.app import build_engine, ensure_topics
from stream_detector.daemon import DetectorDaemon
from stream_detector.models import available_detectors
from stream_detector.models.base import FitConfig
from stream_detector.records import ScoreRecord
from stream_detector.serving import ServedModel
from stream_detector.thresholds.store import RedisStateStore
from stream_detector.training.checkpoint import save_checkpoint
from stream_detector.training.trainer import train_on_series
from tests.integration.conftest import (
    in_process_settings,
    read_topic,
    run_until_caught_up,
)
from tests.unit.test_models import N_FEATURES, TINY_HYPERPARAMETERS, WINDOW

pytestmark = pytest.mark.integration

STEPS = 160


@pytest.mark.parametrize("kind", available_detectors())
def test_each_model_is_served_by_the_daemon(
    kind, kafka_bootstrap, redis_url, kafka_topics, tmp_path
):
    channels = make_synthetic_channels(
        n_channels=2, length=600, n_features=N_FEATURES, seed=11, anomalies_per_channel=1
    )
    ckpt = train_on_series(
        kind,
        [c.train for c in channels],
        window=WINDOW,
        channels=[c.name for c in channels],
        dataset="synthetic",
        hyperparameters=TINY_HYPERPARAMETERS.get(kind, {}),
        fit_config=FitConfig(epochs=2, batch_size=64, device="cpu"),
        train_stride=4,
        progress=False,
    )
    path = save_checkpoint(ckpt, tmp_path / f"{kind}.pt")
    topics = {name: kafka_topics(name, partitions=2) for name in ("tel", "alerts", "dlq", "scores")}
    settings = in_process_settings(kafka_bootstrap, redis_url, topics, path, "serve")
    ensure_topics(settings.kafka)
    model = ServedModel.load(path, device="cpu")  # the loaded checkpoint, as the daemon sees it
    store = RedisStateStore(
        redis.Redis.from_url(redis_url), settings.redis.key_prefix, model.model_info.version
    )
    daemon = DetectorDaemon(build_engine(settings, model), store, settings.kafka, max_wait_ms=50)
    with TelemetrySender(kafka_bootstrap, topics["tel"]) as sender:
        send_synthetic(sender, channels, limit_steps=STEPS, steps_per_record=4, progress=False)
    run_until_caught_up(daemon, settings, f"{kind}: everything committed")
    scores = [
        ScoreRecord.model_validate_json(r.value)
        for r in read_topic(kafka_bootstrap, topics["scores"])
    ]
    assert len(scores) == 2 * (STEPS - WINDOW + 1)
    assert all(np.isfinite(s.score) for s in scores)
    assert daemon.stats.dead_letters == {}
