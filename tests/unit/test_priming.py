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
