"""The pure engine with an in-memory state store: same alerts whatever the restart point."""

from __future__ import annotations

import numpy as np
import pytest

from stream_detector.alerts.episodes import EpisodeRules
from stream_detector.engine import DetectionEngine
from stream_detector.errors import BadRecord
from stream_detector.records import ModelInfo, parse_telemetry, telemetry_bytes
from stream_detector.thresholds import build_threshold
from stream_detector.thresholds.base import ScorePrior
from stream_detector.thresholds.store import MemoryStateStore


class MeanAbsModel:
    """Scores a window by the mean absolute value of its last step: simple and exact."""

    window = 5
    stride = 1
    n_features = 2
    channels = ("A", "B")
    model_info = ModelInfo(name="mean_abs", version="1")
    score_prior = ScorePrior(n=100, mean=0.1, std=0.05, log_mean=np.log(0.1), log_std=0.3)

    def score_raw(self, windows: np.ndarray) -> np.ndarray:
        return np.abs(windows[:, -1, :]).mean(axis=1).astype(np.float32)


def _engine() -> DetectionEngine:
    return DetectionEngine(
        MeanAbsModel(),
        build_threshold("ewma_sigma", k=4.0, alpha=0.05, warmup=10, prior_weight=20),
        EpisodeRules(hold_down=5),
        max_batch_size=7,
        topic="telemetry",
    )


def _stream(n: int = 300) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    data = {}
    for ch in ("A", "B"):
        x = 0.1 + 0.01 * rng.standard_normal((n, 2))
        data[ch] = x.astype(np.float32)
    data["A"][100:110] = 5.0
    data["B"][200:204] = 3.0
    return data


def _records(data, per_record=3):
    """(partition, offset, bytes) interleaved like a bus: A on partition 0, B on partition 1."""
    out = []
    offsets = {"A": 0, "B": 0}
    n = len(data["A"])
    for start in range(0, n, per_record):
        for part, ch in enumerate(("A", "B")):
            out.append(
                (
                    part,
                    offsets[ch],
                    telemetry_bytes(ch, start, float(start), data[ch][start : start + per_record]),
                )
            )
            offsets[ch] += 1
    return out


def _process(engine, store, records, crash=False):
    """Feed records, flushing (decide + save) every 10 windows; `crash` drops the tail."""
    states = {}
    alerts = []
    pending = []
    for part, offset, raw in records:
        rec = parse_telemetry(raw, engine.n_features)
        if rec.channel not in states:
            stored = store.load([rec.channel]).get(rec.channel)
            states[rec.channel] = (
                engine.restore_state(rec.channel, stored)
                if stored
                else engine.new_state(rec.channel, part)
            )
        pending.extend(engine.ingest(states[rec.channel], rec, part, offset))
        if len(pending) >= 10:
            alerts += engine.decide(states, pending, engine.score(pending), now=0.0).alerts
            store.save(list(states.values()))
            pending = []
    if crash:
        return alerts
    alerts += engine.decide(states, pending, engine.score(pending), now=0.0).alerts
    store.save(list(states.values()))
    return alerts


def test_alerts_land_on_the_injected_anomalies():
    alerts = _process(_engine(), MemoryStateStore(), _records(_stream()))
    opens = [(a.channel, a.first_seq) for a in alerts if a.state == "open"]
    assert opens == [("A", 100), ("B", 200)]
    resolves = [(a.channel, a.last_seq) for a in alerts if a.state == "resolve"]
    assert resolves == [("A", 109), ("B", 203)]


@pytest.mark.parametrize("crash_at", [1, 67, 68, 69, 134, 135, 150])
def test_restart_from_saved_state_gives_the_same_alerts(crash_at):
    records = _records(_stream())
    reference = _process(_engine(), MemoryStateStore(), records)
    store = MemoryStateStore()
    first = _process(_engine(), store, records[:crash_at], crash=True)
    # The consumer resumes some records *before* the crash point (uncommitted offsets),
    # with a fresh process: only the store carries over.
    resumed = _process(_engine(), store, records[max(0, crash_at - 9) :])
    key = lambda a: (a.alert_id, a.revision, a.state)  # noqa: E731
    assert sorted(set(map(key, first + resumed))) == sorted(map(key, reference))


def test_unknown_channel_is_rejected():
    with pytest.raises(BadRecord) as info:
        _engine().check_channel("Z")
    assert info.value.reason == "unknown_channel"


def test_batches_are_split_at_max_batch_size():
    engine = _engine()
    calls = []
    original = engine.model.score_raw

    def spy(w):
        calls.append(len(w))
        return original(w)

    engine.model.score_raw = spy  # type: ignore[method-assign]
    state = engine.new_state("A", 0)
    windows = engine.ingest(
        state, parse_telemetry(telemetry_bytes("A", 0, 0.0, np.ones((20, 2))), 2), 0, 0
    )
    assert len(engine.score(windows)) == 16
    assert calls == [7, 7, 2]


def test_offline_run_reports_an_episode_still_open_at_the_end():
    from stream_detector.offline import run_offline

    engine = DetectionEngine(
        MeanAbsModel(),
        build_threshold("ewma_sigma", k=4.0, alpha=0.05, warmup=10, prior_weight=20),
        EpisodeRules(hold_down=5, update_ratio=100.0),
        emit_scores=True,
    )
    x = _stream(300)["A"]
    x[250:] = 5.0  # a level shift that lasts to the end of the stream
    run = run_offline(engine, "A", x, steps_per_record=4)
    assert run.still_open == (250, 299)
    assert run.episodes()[-1] == (250, 299)
    assert [a.state for a in run.alerts if a.first_seq == 250] == ["open"]


def test_an_offline_run_skips_a_step_at_each_break_and_carries_its_state_across():
    from stream_detector.offline import run_offline

    def engine() -> DetectionEngine:
        return DetectionEngine(
            MeanAbsModel(),
            build_threshold("ewma_sigma", k=4.0, alpha=0.05, warmup=150, prior_weight=20),
            EpisodeRules(hold_down=5, update_ratio=100.0),
            emit_scores=True,
        )

    x = _stream(300)["B"]
    run = run_offline(engine(), "B", x, steps_per_record=7, breaks=(160,))
    # No window spans the break: 160 − 4 windows before it, 140 − 4 after, the second part's
    # sequence numbers one step on.
    assert len(run.scores) == 156 + 136
    assert run.end_seqs[155] == 159 and run.end_seqs[156] == 161 + 4
    assert run.end_seqs[-1] == 300
    # B's bump (rows 200–203) after the break is found by a threshold warmed before it.
    assert [first for first, _ in run.episodes()] == [201]
    alone = run_offline(engine(), "B", x[160:], steps_per_record=7)
    # Run alone, the second part is still in its warm-up of 150 scores at the bump.
    assert alone.episodes() == []
    assert "not_ready" not in run.statuses[156:] and "not_ready" in alone.statuses
    with pytest.raises(ValueError, match="breaks must lie inside"):
        run_offline(engine(), "B", x, breaks=(300,))


def _batches_engine() -> DetectionEngine:
    # Batches of 20 scores, an episode back-dated to its batch's first score.
    return DetectionEngine(
        MeanAbsModel(),
        build_threshold(
            "telemanom_batches", span=5, window=200, batch=20, error_buffer=5, warmup=50
        ),
        EpisodeRules(hold_down=30, lead=19),
        max_batch_size=7,
        topic="telemetry",
    )


def test_a_batch_strategy_opens_at_its_verdict_from_the_batchs_first_step():
    alerts = _process(_batches_engine(), MemoryStateStore(), _records(_stream()))
    opens = {a.channel: a for a in alerts if a.state == "open"}
    # A's scores start at seq 4 (window 5): its 5th batch, scores 81–100, is seqs 84–103,
    # and the anomaly at seq 100 is judged at seq 103, the batch's last step. B's at 200
    # falls in scores 181–200, seqs 184–203.
    assert (opens["A"].first_seq, opens["A"].last_seq) == (84, 103)
    assert (opens["B"].first_seq, opens["B"].last_seq) == (184, 203)


@pytest.mark.parametrize("crash_at", [1, 68, 69, 100, 135, 150])
def test_a_batch_strategy_restarted_mid_batch_gives_the_same_alerts(crash_at):
    records = _records(_stream())
    reference = _process(_batches_engine(), MemoryStateStore(), records)
    assert reference
    store = MemoryStateStore()
    first = _process(_batches_engine(), store, records[:crash_at], crash=True)
    resumed = _process(_batches_engine(), store, records[max(0, crash_at - 9) :])
    key = lambda a: (a.alert_id, a.revision, a.state)  # noqa: E731
    assert sorted(set(map(key, first + resumed))) == sorted(map(key, reference))
