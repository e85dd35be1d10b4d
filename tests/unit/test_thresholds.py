import math

import pytest

from stream_detector.thresholds import available_thresholds, build_threshold
from stream_detector.thresholds.base import ScorePrior


def test_registry_names_available_kinds():
    assert "ewma_sigma" in available_thresholds()
    with pytest.raises(KeyError, match="ewma_sigma"):
        build_threshold("nope")


def test_warmup_then_alarm_above_mean_plus_k_sigma():
    thr = build_threshold(
        "ewma_sigma", k=3.0, alpha=0.1, warmup=4, prior_weight=0, log_scores=False
    )
    state = thr.initial_state(None)
    statuses = []
    for score in [1.0, 3.0, 1.0, 3.0]:  # running mean 2, var 1 after these
        state, d = thr.step(state, score)
        statuses.append(d.status)
    assert statuses == ["not_ready"] * 4
    assert state["mean"] == pytest.approx(2.0)
    # hand computation: running-mean phase (rate 1/(w+1)) gives population variance 1.0
    assert state["var"] == pytest.approx(1.0)
    state2, d = thr.step(state, 5.1)  # 2 + 3*1 = 5 < 5.1
    assert d.status == "anomalous" and d.threshold == pytest.approx(5.0)
    assert state2 == state, "protected update: an anomalous score is not learned"
    _, d = thr.step(state, 4.9)
    assert d.status == "normal"


def test_prior_from_training_makes_the_channel_ready_after_warmup_only():
    prior = ScorePrior(n=1000, mean=1.0, std=0.5, log_mean=math.log(0.01), log_std=0.5)
    thr = build_threshold(
        "ewma_sigma", k=4.0, alpha=0.01, warmup=2, prior_weight=100, log_scores=True
    )
    state = thr.initial_state(prior)
    state, d = thr.step(state, 100.0)
    assert d.status == "not_ready"
    limit = math.exp(math.log(0.01) + 4 * 0.5)
    assert d.threshold == pytest.approx(limit, rel=1e-6)
    state, _ = thr.step(state, 0.01)
    _, d = thr.step(state, 100.0)
    assert d.status == "anomalous"


def test_step_does_not_mutate_its_input():
    thr = build_threshold("ewma_sigma", warmup=0, prior_weight=0)
    state = thr.initial_state(None)
    copy = dict(state)
    thr.step(state, 1.0)
    assert state == copy


def test_relative_floor_keeps_quiet_wiggles_below_the_threshold():
    # Scores around 1.0 with a tiny spread: mean + 4σ sits just above 1.0, so a 5 % wiggle
    # would alarm; the floor of 2 × mean does not.
    plain = build_threshold("ewma_sigma", k=4, alpha=0.1, warmup=0, prior_weight=0)
    floored = build_threshold("ewma_sigma", k=4, alpha=0.1, warmup=0, prior_weight=0, min_ratio=2)
    s1, s2 = plain.initial_state(None), floored.initial_state(None)
    for i in range(200):
        x = 1.0 + 0.001 * (-1) ** i
        s1, _ = plain.step(s1, x)
        s2, _ = floored.step(s2, x)
    assert plain.step(s1, 1.05)[1].status == "anomalous"
    _, d = floored.step(s2, 1.05)
    assert d.status == "normal" and d.threshold == pytest.approx(2.0, rel=1e-3)
    assert floored.step(s2, 2.1)[1].status == "anomalous"
    with pytest.raises(ValueError):
        build_threshold("ewma_sigma", min_ratio=0.5)
