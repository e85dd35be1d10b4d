"""knn_dt, the nearest analogues' next value: hand-computed predictions, ties, and its choice."""

from __future__ import annotations

import numpy as np
import pytest

from stream_detector.data import sliding_windows
from stream_detector.models import FitConfig, build_detector
from stream_detector.models import knn_dt as knn_module

CPU = FitConfig(device="cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _windows(*rows: list[float]) -> np.ndarray:
    """One-feature windows (B, len(row), 1) from plain lists."""
    return np.array(rows, dtype=np.float32)[:, :, None]


# Three training windows of three steps: histories (0, 0), (1, 1), (0, 1); successors 1, 5, 7.
TRAIN = _windows([0, 0, 1], [1, 1, 5], [0, 1, 7])


def test_prediction_is_the_mean_successor_of_the_nearest_histories() -> None:
    """Query history (0, 0.1): squared distances 0.01, 1.81 and 0.81 to the three histories."""
    query = _windows([0, 0.1, 2])
    nearest = build_detector("knn_dt", 3, 1, history=2, neighbours=1)
    nearest.fit(TRAIN, None, CPU, progress=False)
    # (0, 0) is nearest: predicted 1, observed 2.
    assert nearest.score(query) == pytest.approx([1.0])
    two = build_detector("knn_dt", 3, 1, history=2, neighbours=2)
    two.fit(TRAIN, None, CPU, progress=False)
    # (0, 0) and (0, 1): predicted (1 + 7) / 2 = 4, observed 2.
    assert two.score(query) == pytest.approx([2.0])
    # A history of one step sees only 0.1: nearest 0 (window 1, successor 1), then 1 in
    # windows 2 and 3, a tie the earlier one wins (successor 5): predicted 3, observed 2.
    short = build_detector("knn_dt", 3, 1, history=1, neighbours=2)
    short.fit(TRAIN, None, CPU, progress=False)
    assert short.score(query) == pytest.approx([1.0])


def test_several_predicted_steps_are_scored_by_their_mean_error() -> None:
    """n_predictions 2: the history is the first step, the last two are predicted."""
    detector = build_detector("knn_dt", 3, 1, history=1, neighbours=1, n_predictions=2)
    detector.fit(_windows([0, 2, 4], [1, 3, 3]), None, CPU, progress=False)
    # History 0.9 is nearest 1: predicted (3, 3), observed (2, 6): errors 1 and 3.
    assert detector.score(_windows([0.9, 2, 6])) == pytest.approx([2.0])


def test_ties_go_to_the_earliest_training_window_in_any_batch() -> None:
    """Telemetry repeats itself exactly: equal histories rank by training order."""
    train = _windows([0, 0, 1], [0, 0, 9], [0, 0, 5])
    detector = build_detector("knn_dt", 3, 1, history=2, neighbours=1)
    detector.fit(train, None, CPU, progress=False)
    queries = _windows(*([[0, 0, 0]] * 3), [5, 5, 0])
    batch = detector.score(queries)
    alone = np.concatenate([detector.score(queries[i : i + 1]) for i in range(len(queries))])
    np.testing.assert_array_equal(batch, alone)
    assert batch[0] == pytest.approx(1.0)


def test_fit_chooses_history_and_neighbours_by_validation_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In 0, 0, 1 repeated, one step of history cannot tell what follows a 0; two can."""
    monkeypatch.setattr(knn_module, "HISTORY_CANDIDATES", (1, 2))
    monkeypatch.setattr(knn_module, "NEIGHBOUR_CANDIDATES", (1, 3))
    series = np.tile([0.0, 0.0, 1.0], 40).astype(np.float32)[:, None]
    windows = sliding_windows(series, 4)
    train, val = windows[:90], windows[90:]
    detector = build_detector("knn_dt", 4, 1)
    record = detector.fit(train, val, CPU, progress=False)
    assert (detector.chosen_history, detector.chosen_neighbours) == (2, 1)
    assert record.val_loss == [0.0]
    assert float(detector.score(val).mean()) == 0.0
    # A history of one step, chosen by hand: after a 0 the nearest (earliest) analogue says 0,
    # wrong whenever a 1 follows, a third of the time after a 0.
    one = build_detector("knn_dt", 4, 1, history=1, neighbours=1)
    one.fit(train, None, CPU, progress=False)
    assert float(one.score(val).mean()) > 0.2


def test_given_settings_are_kept_and_without_validation_the_fallback_is_used() -> None:
    windows = sliding_windows(np.sin(np.arange(200) / 5).astype(np.float32)[:, None], 40)
    given = build_detector("knn_dt", 40, 1, history=3, neighbours=2)
    given.fit(windows[:120], windows[120:], CPU, progress=False)
    assert (given.chosen_history, given.chosen_neighbours) == (3, 2)
    fallback = build_detector("knn_dt", 40, 1)
    record = fallback.fit(windows, None, CPU, progress=False)
    assert (fallback.chosen_history, fallback.chosen_neighbours) == knn_module.FALLBACK
    assert record.val_loss == []
    # The fallback history is cut to what the window holds.
    narrow = build_detector("knn_dt", 10, 1)
    narrow.fit(sliding_windows(windows[:, 0], 10), None, CPU, progress=False)
    assert narrow.chosen_history == 9


def test_bad_settings_and_unfitted_use_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="history must lie in"):
        build_detector("knn_dt", 10, 1, history=10)
    with pytest.raises(ValueError, match="history must lie in"):
        build_detector("knn_dt", 10, 1, history=8, n_predictions=3)
    with pytest.raises(ValueError, match="neighbours"):
        build_detector("knn_dt", 10, 1, neighbours=0)
    with pytest.raises(ValueError, match="n_predictions"):
        build_detector("knn_dt", 10, 1, n_predictions=10)
    fresh = build_detector("knn_dt", 3, 1)
    with pytest.raises(ValueError, match="1 to 900,000 training windows, got 0"):
        fresh.fit(TRAIN[:0], None, CPU, progress=False)
    with pytest.raises(RuntimeError, match="fit or load_state_dict"):
        fresh.score(TRAIN)
    fitted = build_detector("knn_dt", 3, 1, history=2, neighbours=1)
    fitted.fit(TRAIN, None, CPU, progress=False)
    state = fitted.state_dict()
    with pytest.raises(KeyError, match="expects weights"):
        fresh.load_state_dict({"histories": state["histories"]})
    with pytest.raises(ValueError, match="do not fit"):
        build_detector("knn_dt", 3, 2).load_state_dict(state)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.score(TRAIN), fitted.score(TRAIN))
