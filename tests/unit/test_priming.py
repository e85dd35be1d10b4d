"""Priming: the threshold state a channel's history leaves, and nothing else of it."""

from __future__ import annotations

import numpy as np
import pytest

from stream_detector.priming import PRIMED_PARTITION, ReplayedScores, primed_state
from stream_detector.settings import Settings


class _Model:
    """A scorer of windows of 8 steps, one feature; its scores are never asked for."""

    window, stride, n_features, channels = 8, 1, 1, None
    score_prior = None

    @property
    def model_info(self):
        from stream_detector.records import ModelInfo

        return ModelInfo(name="test", version="v-test")

    def score_raw(self, windows: np.ndarray) -> np.ndarray:
        raise AssertionError("priming scores nothing itself")


def _history(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(n, 1)).astype(np.float32)
    scores = np.abs(rng.normal(size=n - 2 * (_Model.window - 1))).astype(np.float32)
    return values, scores


def test_a_primed_state_keeps_the_threshold_state_and_starts_all_else_new():
    from stream_detector.app import build_engine
    from stream_detector.offline import run_offline

    values, scores = _history()
    # A break in the middle: two halves, each losing its first window - 1 steps of scores.
    primed = primed_state(Settings(), _Model(), "X-1", values, scores, breaks=(300,))
    assert primed.partition == PRIMED_PARTITION and primed.last_offset == -1
    assert len(primed.buffer) == 0 and primed.buffer.last_seq is None
    assert not primed.episode.active

    engine = build_engine(Settings(), ReplayedScores(_Model(), scores))
    engine.emit_scores = True
    run = run_offline(engine, "X-1", values, steps_per_record=10, breaks=(300,))
    assert run.state is not None
    assert primed.threshold == run.state.threshold
    assert primed.threshold != engine.new_state("X-1", 0).threshold  # it learned something


def test_replayed_scores_refuse_a_stream_longer_than_the_first_pass():
    model = ReplayedScores(_Model(), np.zeros(3, dtype=np.float32))
    assert list(model.score_raw(np.zeros((2, 8, 1)))) == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="ran out"):
        model.score_raw(np.zeros((2, 8, 1)))


def test_the_unseen_part_starts_at_the_models_first_validation_window():
    from stream_detector.priming import unseen_start

    fit = {"split": "chronological", "val_fraction": 0.2, "train_stride": 2}
    # 1,000 rows, windows of 100 at stride 2: 451 windows, the first 360 trained on.
    assert unseen_start(fit, 1_000, 100) == 720
    assert unseen_start({k: v for k, v in fit.items() if k != "split"}, 1_000, 100) == 720
    assert unseen_start(fit | {"split": "shuffled"}, 1_000, 100) is None
    assert unseen_start(fit | {"val_fraction": 0.0}, 1_000, 100) is None


@pytest.fixture()
def d11_folds(d11_cache):
    """D-11's cache read back: the settings, its checkpoint and model, its train split and
    its two fold models (trained here)."""
    from pathlib import Path
    from types import SimpleNamespace

    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.crossfit_replay import channel_folds, fold_store
    from stream_detector.serving import ServedModel
    from stream_detector.training.checkpoint import load_checkpoint

    data = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"
    settings = Settings()
    checkpoint = load_checkpoint(d11_cache / "D-11.pt", device="cpu")
    recipe, store = fold_store(d11_cache)
    return SimpleNamespace(
        data=data,
        cache=d11_cache,
        settings=settings,
        checkpoint=checkpoint,
        model=ServedModel(checkpoint),
        train=load_series(data, "D-11", "train"),
        folds=channel_folds(data, "D-11", recipe, store, settings),
    )


def _shuffled(checkpoint):
    """The same model, as if its validation windows had been drawn through train."""
    import dataclasses

    from stream_detector.serving import ServedModel

    return ServedModel(dataclasses.replace(checkpoint, fit=checkpoint.fit | {"split": "shuffled"}))


def test_the_history_scale_is_the_models_median_over_fold_0s_on_the_unseen_rows(d11_folds):
    from stream_detector.evaluation.threshold_grid import raw_scores
    from stream_detector.priming import MIN_SCALE_SCORES, history_scale, unseen_start

    d = d11_folds
    start = unseen_start(d.checkpoint.fit, len(d.train), d.model.window)
    half = (len(d.train) + 1) // 2
    assert start is not None and start > half
    own = raw_scores(d.settings, d.model, "D-11", d.train[start:])
    theirs = d.folds[0].scores[start - half : start - half + len(own)]
    assert len(theirs) == len(own) >= MIN_SCALE_SCORES
    found = history_scale(d.settings, d.model, "D-11", d.train, d.folds)
    assert found.unscaled_because is None and found.rows == len(own)
    assert found.factor == pytest.approx(float(np.median(own) / np.median(theirs)))
    assert found.factor != pytest.approx(1.0)

    unscaled = history_scale(d.settings, _shuffled(d.checkpoint), "D-11", d.train, d.folds)
    assert unscaled.factor == 1.0 and "not split chronologically" in (
        unscaled.unscaled_because or ""
    )


def test_priming_from_a_cache_rescales_unless_told_not_to(d11_folds):
    from stream_detector.evaluation.crossfit_replay import train_history
    from stream_detector.priming import history_scale, primed_from_cache
    from stream_detector.thresholds.state_codec import pack_state

    d = d11_folds
    history = train_history(d.folds)
    assert history is not None
    values, scores, breaks = history
    factor = history_scale(d.settings, d.model, "D-11", d.train, d.folds)

    def threshold(primed):
        assert len(primed.states) == 1 and primed.unprimed == []
        return pack_state(primed.states[0].threshold)

    def prime(model, **kwargs):
        return primed_from_cache(d.settings, model, d.data, d.cache, ["D-11"], False, **kwargs)

    scaled = prime(d.model)
    assert scaled.factors == {"D-11": factor.factor} and scaled.unscaled == {}
    expected = primed_state(d.settings, d.model, "D-11", values, scores * factor.factor, breaks)
    assert threshold(scaled) == pack_state(expected.threshold)

    plain = prime(d.model, scale=False)
    assert plain.factors == {} and plain.unscaled == {}
    unscaled = primed_state(d.settings, d.model, "D-11", values, scores, breaks)
    assert threshold(plain) == pack_state(unscaled.threshold) != threshold(scaled)

    # A model with no unseen part of train is primed unscaled, and named.
    shuffled = _shuffled(d.checkpoint)
    named = prime(shuffled)
    assert named.factors == {} and list(named.unscaled) == ["D-11"]
    assert named.unscaled["D-11"].startswith("its model was not split chronologically")
    assert threshold(named) == pack_state(
        primed_state(d.settings, shuffled, "D-11", values, scores, breaks).threshold
    )


def test_unscaled_channels_are_listed_once_per_reason():
    from stream_detector.priming import by_reason

    assert by_reason({"A-1": "no part", "A-2": "too short", "A-3": "no part"}) == [
        "no part (2): A-1, A-3",
        "too short (1): A-2",
    ]
    assert by_reason({}) == []
