"""`stream-detector prime` against a real Redis: it writes the primed threshold state where a
channel has none, the daemon's engine restores it and applies the first live record, and it
never replaces a state the daemon has written."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


def test_prime_writes_once_and_the_daemon_starts_from_it(
    d11_cache: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_detector.app import build_engine
    from stream_detector.cli import main
    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.crossfit_replay import (
        cache_recipe,
        channel_folds,
        fold_folder,
        fold_recipe,
        train_history,
    )
    from stream_detector.evaluation.threshold_grid import ScoreCache
    from stream_detector.priming import history_scale, primed_state
    from stream_detector.records import parse_telemetry, telemetry_bytes
    from stream_detector.serving import ServedModel
    from stream_detector.settings import Settings
    from stream_detector.thresholds.state_codec import pack_state
    from stream_detector.thresholds.store import RedisStateStore

    prefix = f"p{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SD_MODEL__CHECKPOINT", str(d11_cache / "D-11.pt"))
    monkeypatch.setenv("SD_REDIS__URL", redis_url)
    monkeypatch.setenv("SD_REDIS__KEY_PREFIX", prefix)
    monkeypatch.setenv("SD_DATA__ROOT", str(DATA))
    args = ["prime", "--cache", str(d11_cache), "--channel", "D-11", "--no-progress"]

    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "primed 1 channel(s)" in dry.output and "dry run, nothing written" in dry.output
    model = ServedModel.load(d11_cache / "D-11.pt", device="cpu")
    store = RedisStateStore(redis.Redis.from_url(redis_url), prefix, model.model_info.version)
    assert store.load(["D-11"]) == {}

    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "1 written, 0 kept their existing state" in first.output
    stored = store.load(["D-11"])["D-11"]
    assert (stored.partition, stored.last_offset) == (-1, -1)

    # What was written is the threshold state the cross-fitted train leaves, its scores
    # rescaled to the daemon's model.
    settings = Settings()
    recipe = fold_recipe(cache_recipe(d11_cache))
    folds = channel_folds(
        DATA, "D-11", recipe, ScoreCache(fold_folder(d11_cache), recipe), settings
    )
    history = train_history(folds)
    assert history is not None
    values, scores, breaks = history
    scale = history_scale(settings, model, "D-11", load_series(DATA, "D-11", "train"), folds)
    assert scale.unscaled_because is None
    assert f"1 history(ies) rescaled to the model, factor {scale.factor:.2f}" in first.output
    expected = primed_state(settings, model, "D-11", values, scores * scale.factor, breaks)
    unscaled = primed_state(settings, model, "D-11", values, scores, breaks)
    engine = build_engine(settings, model)
    restored = engine.restore_state("D-11", stored)
    assert pack_state(restored.threshold) == pack_state(expected.threshold)
    assert pack_state(restored.threshold) != pack_state(unscaled.threshold)
    assert len(restored.buffer) == 0 and not restored.episode.active

    # The daemon's first live record, at offset 0 of partition 2, is applied, not a replay.
    test = load_series(DATA, "D-11", "test")
    record = parse_telemetry(telemetry_bytes("D-11", 0, 0.0, test[:40], 1.0), engine.n_features)
    windows = engine.ingest(restored, record, 2, 0)
    assert len(windows) == 40 - model.window + 1
    assert (restored.partition, restored.last_offset) == (2, 0)
    assert store.save([restored]) == 1

    # Priming again keeps the live state: the daemon's offset and buffer stay.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "0 written, 1 kept their existing state" in again.output
    live = store.load(["D-11"])["D-11"]
    assert (live.partition, live.last_offset) == (2, 0)
    rows = np.frombuffer(live.buffer, dtype=np.float32)
    assert rows.size > 0


def test_prime_refuses_a_cache_of_another_window(
    d11_cache: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    from stream_detector.cli import main

    other = tmp_path / "other"
    other.mkdir()
    recipe = json.loads((d11_cache / "recipe.json").read_text())
    (other / "recipe.json").write_text(json.dumps(recipe | {"window": 31}))
    monkeypatch.setenv("SD_MODEL__CHECKPOINT", str(d11_cache / "D-11.pt"))
    monkeypatch.setenv("SD_REDIS__URL", redis_url)
    monkeypatch.setenv("SD_DATA__ROOT", str(DATA))
    result = CliRunner().invoke(main, ["prime", "--cache", str(other), "--channel", "D-11"])
    assert result.exit_code != 0
    assert "window 31, the daemon's model has 30" in result.output


def test_a_primed_daemon_decides_through_kafka_as_the_primed_offline_engine(
    d11_cache: Path, kafka_bootstrap: str, redis_url: str, kafka_topics
) -> None:
    """The daemon, started on a primed Redis, publishes every score, threshold and status the
    offline engine makes from the same primed state (what `warm_test` counts); cold, the
    same stream starts in warm-up, so the comparison tells the two apart."""
    import copy

    from producers.sender import TelemetrySender
    from stream_detector.app import build_engine, ensure_topics
    from stream_detector.daemon import DetectorDaemon
    from stream_detector.data.smap_msl import load_series
    from stream_detector.offline import run_offline
    from stream_detector.priming import primed_from_cache
    from stream_detector.records import ScoreRecord
    from stream_detector.serving import ServedModel
    from stream_detector.thresholds.store import RedisStateStore
    from tests.integration.conftest import (
        in_process_settings,
        read_alerts,
        read_topic,
        run_until_caught_up,
    )

    topics = {name: kafka_topics(name, partitions=1) for name in ("tel", "alerts", "dlq", "scores")}
    settings = in_process_settings(
        kafka_bootstrap, redis_url, topics, d11_cache / "D-11.pt", "prime"
    )
    model = ServedModel.load(d11_cache / "D-11.pt", device="cpu")
    primed_channels = primed_from_cache(settings, model, DATA, d11_cache, ["D-11"], False)
    states = primed_channels.states
    assert primed_channels.unprimed == [] and primed_channels.unscaled == {}
    assert len(states) == 1
    offline_start = copy.deepcopy(states[0])
    store = RedisStateStore(
        redis.Redis.from_url(redis_url), settings.redis.key_prefix, model.model_info.version
    )
    assert store.prime(states) == 1

    test = load_series(DATA, "D-11", "test")[:600]
    ensure_topics(settings.kafka)
    with TelemetrySender(kafka_bootstrap, topics["tel"]) as sender:
        for start in range(0, len(test), 10):
            sender.send("D-11", start, float(start), test[start : start + 10], 1.0)
    daemon = DetectorDaemon(build_engine(settings, model), store, settings.kafka, max_wait_ms=50)
    run_until_caught_up(daemon, settings, "the primed daemon committed everything")
    streamed = [
        ScoreRecord.model_validate_json(r.value)
        for r in read_topic(kafka_bootstrap, topics["scores"])
    ]

    def offline(state):
        engine = build_engine(settings, model)
        engine.emit_scores = True
        return run_offline(engine, "D-11", test, steps_per_record=10, state=state)

    primed, cold = offline(offline_start), offline(None)
    assert [(s.seq, s.status) for s in streamed] == list(
        zip(primed.end_seqs, primed.statuses, strict=True)
    )
    assert np.allclose([s.score for s in streamed], primed.scores, rtol=1e-5)
    assert [s.threshold for s in streamed] == pytest.approx(primed.thresholds, rel=1e-6)
    key = lambda a: (a.alert_id, a.revision, a.state, a.first_seq, a.last_seq)  # noqa: E731
    assert {key(a) for a in read_alerts(kafka_bootstrap, topics["alerts"])} == {
        key(a) for a in primed.alerts
    }
    # Cold, the first judged windows are warm-up; primed, the daemon judges from the first.
    assert cold.statuses[0] == "not_ready" and streamed[0].status != "not_ready"
