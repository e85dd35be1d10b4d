"""F1-optimal and false-positive-rate-target thresholds on hand-made labelled scores."""

from __future__ import annotations

import numpy as np
import pytest

from stream_detector.evaluation.calibrate import f1_optimal_threshold, fpr_target_threshold
from stream_detector.thresholds import build_threshold


def test_separable_scores_get_a_threshold_between_the_classes() -> None:
    t, f1 = f1_optimal_threshold(np.array([0.1, 0.2, 0.3, 0.9, 0.8]), np.array([0, 0, 0, 1, 1]))
    assert (t, f1) == (pytest.approx(0.55), 1.0)


def test_f1_optimum_by_hand() -> None:
    # Flag the top 1: F1 2/3; top 2: 1/2; top 3: 4/5; all: 2/3. Best: above 1.5.
    t, f1 = f1_optimal_threshold(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1]))
    assert t == pytest.approx(1.5) and f1 == pytest.approx(0.8)


def test_tied_scores_are_flagged_together() -> None:
    # Sorted: 2 (anomalous), then 1 and 1 (one of each): the cut cannot split the tie.
    t, f1 = f1_optimal_threshold(np.array([1.0, 1.0, 2.0]), np.array([1, 0, 1]))
    assert t == pytest.approx(0.5) and f1 == pytest.approx(0.8)


def test_equal_f1_prefers_the_higher_threshold() -> None:
    # Top 1: F1 = 2/(1+3) = 0.5; top 3: 2·2/(3+3) = 0.667; top 5: 2·3/(5+3) = 0.75.
    t, f1 = f1_optimal_threshold(np.arange(5.0), np.array([1, 0, 1, 0, 1]))
    assert f1 == pytest.approx(0.75) and t == pytest.approx(-0.5)
    t, f1 = f1_optimal_threshold(np.array([4.0, 3.0, 2.0, 1.0]), np.array([1, 0, 0, 1]))
    # Top 1: 2/3; top 4: 2·2/(4+2) = 2/3: the higher threshold wins the tie.
    assert f1 == pytest.approx(2 / 3) and t == pytest.approx(3.5)


def test_fpr_target_flags_at_most_that_share_of_normal_points() -> None:
    normal = np.arange(1.0, 101.0)
    scores = np.concatenate([normal, [500.0, 600.0]])
    labels = np.concatenate([np.zeros(100, bool), np.ones(2, bool)])
    assert fpr_target_threshold(scores, labels, 0.05) == 95.0  # 96..100 above: 5 %
    assert fpr_target_threshold(scores, labels, 0.0) == 100.0
    assert fpr_target_threshold(scores, labels, 0.049) == 96.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: f1_optimal_threshold(np.ones(3), np.zeros(3)), "no anomalous point"),
        (lambda: f1_optimal_threshold(np.ones(3), np.zeros(2)), "as many labels"),
        (lambda: f1_optimal_threshold(np.array([1.0, np.nan]), np.ones(2)), "finite"),
        (lambda: fpr_target_threshold(np.ones(3), np.ones(3), 0.1), "no normal point"),
        (lambda: fpr_target_threshold(np.ones(3), np.zeros(3), 1.0), "fpr must lie"),
    ],
)
def test_bad_input_is_a_clear_error(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_the_fixed_strategy_serves_a_chosen_value() -> None:
    fixed = build_threshold("fixed", value=2.5)
    state = fixed.initial_state(None)
    state, below = fixed.step(state, 2.5)
    state, above = fixed.step(state, 2.6)
    assert (below.status, above.status, above.threshold) == ("normal", "anomalous", 2.5)
    with pytest.raises(ValueError, match="positive"):
        build_threshold("fixed", value=0.0)
