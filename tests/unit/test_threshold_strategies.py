"""Hand-checkable cases for every threshold strategy, and a contract they all keep."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from stream_detector.thresholds import available_thresholds, build_threshold
from stream_detector.thresholds.base import ScorePrior
from stream_detector.thresholds.p2 import p2_estimate, p2_initial, p2_update
from stream_detector.thresholds.spot import fit_gpd, gpd_log_likelihood, tail_quantile
from stream_detector.thresholds.state_codec import pack_state, unpack_state

PRIOR = ScorePrior(
    n=1000,
    mean=1.0,
    std=0.2,
    log_mean=0.0,
    log_std=0.2,
    quantiles={"p50": 1.0, "p90": 1.25, "p95": 1.3, "p99": 1.5, "p99.9": 1.7, "max": 1.9},
)
SMALL = {
    "ewma_sigma": {"warmup": 20},
    "p2_quantile": {"warmup": 20},
    "spot": {"n_init": 200},
    "train_quantile": {},
    "train_sigma": {},
    "fixed": {"value": 1.2},
    "recent_max": {"warmup": 20, "block_size": 50, "blocks": 4},
    "telemanom": {"span": 5, "window": 200, "batch": 20, "error_buffer": 5, "warmup": 50},
    "telemanom_batches": {"span": 5, "window": 200, "batch": 20, "error_buffer": 5, "warmup": 50},
}


@pytest.mark.parametrize("kind", available_thresholds())
def test_contract(kind):
    """Pure step, JSON-able state, a clear anomaly flagged once warm (a strategy that judges
    a batch at a time: by the batch's end) and, if the strategy is protected, never learned."""
    if kind not in SMALL:
        pytest.fail(f"add small parameters for the new threshold {kind!r}")
    thr = build_threshold(kind, **SMALL[kind])
    state = thr.initial_state(PRIOR)
    rng = np.random.default_rng(0)
    for x in 1.0 + 0.01 * rng.uniform(size=400):
        before = copy.deepcopy(state)
        state, decision = thr.step(state, float(x))
        assert thr.step(before, float(x)) == (state, decision)
        assert decision.status in ("normal", "not_ready", "pending")
    state = json.loads(json.dumps(state))  # what Redis would hand back
    after, decision = thr.step(state, 50.0)
    for _ in range(getattr(thr, "latency", 0)):
        if decision.status != "pending":
            break
        after, decision = thr.step(after, 1.0)
    assert decision.status == "anomalous" and decision.threshold is not None
    assert decision.threshold < 50.0
    stable = lambda s: {k: v for k, v in s.items() if k not in thr.volatile_keys}  # noqa: E731
    if thr.protected:
        assert stable(after) == stable(state), "an anomalous score must not be learned"
    assert json.dumps(thr.describe())


def test_static_strategies_by_hand():
    q = build_threshold("train_quantile", quantile="p99", factor=2.0)
    state = q.initial_state(PRIOR)
    assert q.step(state, 3.0)[1].status == "normal"
    assert q.step(state, 3.01)[1].status == "anomalous"
    s = build_threshold("train_sigma", k=3.0)
    assert s.step(s.initial_state(PRIOR), 1.61)[1].threshold == pytest.approx(1.6)
    with pytest.raises(ValueError, match=r"p99\.99"):
        build_threshold("train_quantile", quantile="p99.99").initial_state(PRIOR)


def test_p2_tracks_the_exact_quantile():
    rng = np.random.default_rng(1)
    data = rng.exponential(1.0, 20_000)
    state = p2_initial(0.99)
    for x in data:
        state = p2_update(state, float(x), 0.99)
    exact = float(np.quantile(data, 0.99))
    assert p2_estimate(state) == pytest.approx(exact, rel=0.05)  # ln(100) ≈ 4.6


def test_p2_on_five_points_is_their_median_marker():
    state = p2_initial(0.5)
    for x in [5.0, 1.0, 4.0, 2.0, 3.0]:
        state = p2_update(state, x, 0.5)
    assert p2_estimate(state) == 3.0


def test_gpd_fit_recovers_a_known_tail():
    rng = np.random.default_rng(2)
    gamma, sigma = 0.2, 1.5
    u = rng.uniform(size=5000)
    peaks = sigma / gamma * ((1 - u) ** (-gamma) - 1)  # inverse CDF of the GPD
    g, s = fit_gpd(peaks)
    assert g == pytest.approx(gamma, abs=0.05)
    assert s == pytest.approx(sigma, rel=0.08)
    assert gpd_log_likelihood(peaks, g, s) >= gpd_log_likelihood(peaks, gamma, sigma)


def test_gpd_fit_of_an_exponential_tail_has_gamma_near_zero():
    peaks = np.random.default_rng(3).exponential(2.0, 4000)
    g, s = fit_gpd(peaks)
    assert abs(g) < 0.05 and s == pytest.approx(2.0, rel=0.08)


def test_tail_quantile_by_hand():
    # exponential tail (gamma 0): P(X > z) = (Nt/n)·exp(-(z-t)/sigma) = q
    z = tail_quantile(t=1.0, gamma=0.0, sigma=2.0, q=1e-3, n=1000, n_peaks=100)
    assert z == pytest.approx(1.0 + 2.0 * math.log(100 / 1000 / 1e-3))
    z = tail_quantile(t=0.0, gamma=0.5, sigma=1.0, q=0.01, n=100, n_peaks=10)
    assert z == pytest.approx((0.1**-0.5 - 1) / 0.5)


def test_spot_threshold_sits_near_the_true_risk_quantile():
    rng = np.random.default_rng(4)
    spot = build_threshold("spot", q=1e-3, level=0.95, n_init=2000)
    state = spot.initial_state(None)
    for x in rng.exponential(1.0, 6000):
        state, decision = spot.step(state, float(x))
    # For Exp(1), P(X > z) = 1e-3 at z = ln(1000) ≈ 6.91.
    assert decision.threshold == pytest.approx(math.log(1000), rel=0.15)


def test_dspot_follows_a_drifting_baseline():
    rng = np.random.default_rng(5)
    dspot = build_threshold("spot", q=1e-4, level=0.95, n_init=500, depth=50)
    state = dspot.initial_state(None)
    drift = np.linspace(0, 20, 4000)
    flagged = 0
    for i, x in enumerate(drift + rng.normal(0, 0.3, 4000)):
        state, decision = dspot.step(state, float(x))
        flagged += decision.status == "anomalous" and i > 500
    assert flagged < 20, "a slow drift is not an anomaly for DSPOT"
    assert dspot.step(state, 20 + 10.0)[1].status == "anomalous"


def test_telemanom_epsilon_on_a_series_with_a_known_answer():
    from stream_detector.thresholds.telemanom import find_z

    errors = np.array([1.0] * 95 + [10.0] * 5)
    # mean 1.45, sd 1.9615: every z in 2.5..4.0 flags exactly the 5 spikes with the same
    # trade-off score, z >= 4.5 flags nothing; ties go to the larger z.
    assert find_z(errors, error_buffer=1) == 4.0
    assert find_z(errors, error_buffer=3) == 4.0
    # Two separate bursts are two sequences: still found, at the z that isolates both.
    two = np.array([1.0] * 40 + [9.0] * 5 + [1.0] * 50 + [9.0] * 5)
    assert find_z(two, error_buffer=1) == pytest.approx(2.5)
    # Flat errors: nothing to separate, the default (12) comes back.
    assert find_z(np.ones(50), error_buffer=1) == 12.0


def test_telemanom_flags_a_burst_and_prunes_a_bump_close_to_normal():
    thr = build_threshold(
        "telemanom", span=3, window=300, batch=30, error_buffer=2, warmup=100, spike_margin=0
    )
    state = thr.initial_state(None)
    rng = np.random.default_rng(6)
    for x in 1.0 + 0.05 * rng.standard_normal(400):
        state, _ = thr.step(state, float(x))
    burst = [thr.step(state, 8.0)]
    for _ in range(3):
        burst.append(thr.step(burst[-1][0], 8.0))
    assert burst[-1][1].status == "anomalous"
    _, decision = thr.step(state, float(state["normal_max"]) * 1.02)
    assert decision.status == "normal", "within p of the largest normal score: pruned"


def _warm_telemanom(**params):
    """span 1 (no smoothing), no scale check, spike rule or re-learning unless asked: ε is
    easy to reason about."""
    defaults = {"span": 1, "window": 200, "batch": 20, "error_buffer": 3, "warmup": 0}
    off = {"min_value_ratio": 0.0, "min_error": 0.0, "spike_margin": 0.0, "relearn_after": 0}
    thr = build_threshold("telemanom", **{**defaults, **off, **params})
    state = thr.initial_state(None)
    rng = np.random.default_rng(3)
    for x in 1.0 + 0.1 * rng.uniform(size=200):  # errors in [1.0, 1.1): σ ≈ 0.029
        state, _ = thr.step(state, float(x), float(rng.uniform(0, 100)))
    return thr, state


def test_telemanom_error_buffer_keeps_the_steps_after_a_hit():
    thr, state = _warm_telemanom()
    assert state["eps"] < 1.5 and state["normal_max"] < 1.1
    state, d = thr.step(state, 10.0)
    statuses = [d.status]
    for _ in range(4):
        state, d = thr.step(state, 1.05)
        statuses.append(d.status)
    # error_buffer 3: the hit and the 2 steps after it, then normal again.
    assert statuses == ["anomalous", "anomalous", "anomalous", "normal", "normal"]


def test_telemanom_ignores_errors_small_beside_the_signal():
    # Values spread over 0..100: the 5–95 % range is about 90, so an error must beat 4.5.
    thr, state = _warm_telemanom(min_value_ratio=0.05)
    assert thr.step(state, 3.0, 50.0)[1].status == "normal"
    assert thr.step(state, 6.0, 50.0)[1].status == "anomalous"
    # min_error is an absolute floor in score units.
    thr, state = _warm_telemanom(min_error=5.0)
    assert thr.step(state, 3.0)[1].status == "normal"
    assert thr.step(state, 6.0)[1].status == "anomalous"
    # Without either, 3.0 is far above ε.
    thr, state = _warm_telemanom()
    assert thr.step(state, 3.0)[1].status == "anomalous"


def test_telemanom_flags_an_error_that_falls_far_below_normal():
    thr, state = _warm_telemanom()
    # Flipped around the mean (≈ 1.05), an error of 0 is ≈ 2.1: far above ε_inv (< 1.5).
    assert thr.step(state, 0.0)[1].status == "anomalous"
    thr, state = _warm_telemanom(inverted=False)
    assert thr.step(state, 0.0)[1].status == "normal"


def test_telemanom_relearns_after_a_long_run_of_anomalies():
    thr, state = _warm_telemanom(relearn_after=5)
    window = list(state["buf"])
    for i in range(8):
        state, d = thr.step(state, 10.0)
        assert d.status == "anomalous"
        if i < 5:
            assert state["buf"] == window, "protected while the run is short"
    assert state["buf"][-2:] == [10.0, 10.0], "learned once the run outlasts relearn_after"


def test_telemanom_prune_window_prunes_against_every_learned_error_of_the_window():
    for prune_window, then in ((False, "anomalous"), (True, "normal")):
        thr, state = _warm_telemanom(prune_window=prune_window)
        assert state["eps"] == pytest.approx(1.3733, abs=1e-4)
        assert state["normal_max"] == pytest.approx(1.1, abs=1e-4)
        # 1.2 is under ε: normal, learned. Refreshed 20 learned errors later, ε falls under it.
        state, d = thr.step(state, 1.2)
        assert d.status == "normal"
        for _ in range(19):
            state, _ = thr.step(state, 1.05)
        assert state["since"] == 0 and state["eps"] == pytest.approx(1.1905, abs=1e-4)
        # By default the bar is the largest error under ε (≈ 1.1): 1.3 clears it by p
        # (1.3 · 0.87 = 1.131). Against the window, the bar is the learned 1.2 itself.
        assert state["normal_max"] == pytest.approx(1.2 if prune_window else 1.1, abs=1e-4)
        assert thr.step(state, 1.3)[1].status == then
        assert thr.step(state, 1.4)[1].status == "anomalous"  # 1.4 · 0.87 = 1.218 > 1.2


def _warm_from_prior(prior, **params):
    """As `_warm_telemanom`, but started from a training prior (for `train_floor`)."""
    defaults = {"span": 1, "window": 200, "batch": 20, "error_buffer": 3, "warmup": 0}
    off = {"min_value_ratio": 0.0, "min_error": 0.0, "spike_margin": 0.0, "relearn_after": 0}
    thr = build_threshold("telemanom", **{**defaults, **off, **params})
    state = thr.initial_state(prior)
    rng = np.random.default_rng(3)
    for x in 1.0 + 0.1 * rng.uniform(size=200):  # errors in [1.0, 1.1): ε < 1.5
        state, _ = thr.step(state, float(x))
    return thr, state


def test_telemanom_train_floor_holds_upward_hits_to_a_training_quantile():
    prior = ScorePrior(1000, 1.0, 0.2, 0.0, 0.2, {"p99": 3.0, "max": 5.0})
    # Without a floor anything above ε (< 1.5) is a hit; with p99 an error must beat 3.0,
    # with the training maximum 5.0.
    expected = {
        None: ("anomalous", "anomalous"),
        "p99": ("normal", "anomalous"),
        "max": ("normal", "normal"),
    }
    for floor, (at_2, at_4) in expected.items():
        thr, state = _warm_from_prior(prior, train_floor=floor)
        assert state["train_floor"] == {None: 0.0, "p99": 3.0, "max": 5.0}[floor]
        assert state["eps"] < 1.5
        assert thr.step(state, 2.0)[1].status == at_2
        assert thr.step(state, 4.0)[1].status == at_4
        assert thr.step(state, 6.0)[1].status == "anomalous"
        # An unusually small error is not measured against large ones: still a hit.
        assert thr.step(state, 0.0)[1].status == "anomalous"
    # No prior (or no such quantile): no floor.
    thr = build_threshold("telemanom", train_floor="p99")
    assert thr.initial_state(None)["train_floor"] == 0.0
    assert thr.initial_state(ScorePrior(10, 1.0, 0.1, 0.0, 0.1, {"max": 4.0}))["train_floor"] == 0.0
    with pytest.raises(ValueError, match="train_floor must be one of"):
        build_threshold("telemanom", train_floor="p42")


def test_telemanom_train_floor_holds_the_spike_rule_too_and_reads_old_states():
    prior = ScorePrior(1000, 1.0, 0.2, 0.0, 0.2, {"p99": 3.0, "max": 5.0})
    # span 105: one raw 4.0 moves the smoothed error by ~0.06, so only the spike rule
    # (4.0 > 1.5 × the window's raw maximum 1.1) can flag it, and it must beat the floor.
    for floor, then in ((None, "anomalous"), ("p99", "anomalous"), ("max", "normal")):
        thr, state = _warm_from_prior(prior, span=105, spike_margin=0.5, train_floor=floor)
        assert thr.step(state, 4.0)[1].status == then
    # A state saved before the option existed has no floor and still decides.
    thr, state = _warm_from_prior(prior, train_floor="max")
    del state["train_floor"]
    assert thr.step(state, 2.0)[1].status == "anomalous"


def test_telemanom_starts_from_the_training_tail():
    thr = build_threshold("telemanom", span=1, window=200, batch=20, warmup=0, prior_tail=200)
    tail = tuple(1.0 + 0.01 * (i % 7) for i in range(300))
    state = thr.initial_state(ScorePrior(300, 1.03, 0.02, 0.0, 0.02, {"max": 1.06}, tail=tail))
    assert len(state["buf"]) == 200 and state["eps"] is not None
    assert state["normal_max"] == pytest.approx(1.06)
    assert thr.step(state, 5.0, 0.0)[1].status == "anomalous"  # ready at once


def test_recent_max_by_hand():
    """Threshold = (1 + margin) × the largest normal score of the last blocks × block_size."""
    thr = build_threshold("recent_max", margin=0.5, blocks=2, block_size=3, warmup=0)
    state = thr.initial_state(ScorePrior(10, 1.0, 0.1, 0.0, 0.1, {"max": 4.0}))
    state, d = thr.step(state, 1.0)
    assert (d.status, d.threshold) == ("normal", 6.0)  # 1.5 × the training maximum
    for x in (2.0, 1.0):  # block 1 = [1, 2, 1]: maxima [4, 2]
        state, d = thr.step(state, x)
    for x in (1.0, 1.0, 1.0):  # block 2 = [1, 1, 1]: maxima [2, 1], the training max is gone
        state, d = thr.step(state, x)
    assert state["maxima"] == [2.0, 1.0]
    state, d = thr.step(state, 3.0)
    assert (d.status, d.threshold) == ("normal", 3.0)  # not above 1.5 × 2
    state, d = thr.step(state, 4.6)
    assert (d.status, d.threshold) == ("anomalous", 4.5)  # 1.5 × max(2, 1, 3)
    assert state["run"] == 1 and state["current"] == 3.0  # not learned


def test_recent_max_relearns_a_persistent_shift():
    thr = build_threshold(
        "recent_max", margin=0.1, blocks=2, block_size=5, warmup=0, relearn_after=3
    )
    state = thr.initial_state(None)
    for _ in range(10):
        state, d = thr.step(state, 1.0)
    statuses = []
    for _ in range(6):  # the level moves to 5 and stays
        state, d = thr.step(state, 5.0)
        statuses.append(d.status)
    # Three anomalous windows are protected; the fourth is learned, and 5 is normal after it.
    assert statuses == ["anomalous"] * 4 + ["normal"] * 2


def test_recent_max_smooths_spiky_scores():
    """With span 3 (α = 0.5) a blip of 1.8 over a level of 1 counts as 1.4."""
    plain = build_threshold("recent_max", margin=0.5, warmup=0)
    smooth = build_threshold("recent_max", margin=0.5, warmup=0, span=3)
    prior = ScorePrior(10, 1.0, 0.1, 0.0, 0.1, {"max": 1.0})
    a, b = plain.initial_state(prior), smooth.initial_state(prior)
    for _ in range(5):
        a, _ = plain.step(a, 1.0)
        b, _ = smooth.step(b, 1.0)
    assert plain.step(a, 1.8)[1].status == "anomalous"  # 1.8 > 1.5 × 1
    b, d = smooth.step(b, 1.8)
    assert d.status == "normal" and b["smooth"] == pytest.approx(1.4)
    assert b["current"] == pytest.approx(1.4)  # learned: the limit is now 2.1
    b, d = smooth.step(b, 4.0)  # (1.4 + 4) / 2 = 2.7 > 2.1
    assert d.status == "anomalous" and d.threshold == pytest.approx(2.1)


def test_telemanom_flags_a_one_step_spike_the_smoothing_hides():
    # span 105: a single error of 3 moves the EWMA by ~0.06, nowhere near ε...
    thr, state = _warm_telemanom(span=105, spike_margin=1.0, min_error=0.1)
    assert thr.step(state, 3.0)[1].status == "anomalous"
    # ...which is all the smoothed path sees without the spike rule.
    thr, state = _warm_telemanom(span=105, min_error=0.1)
    assert thr.step(state, 3.0)[1].status == "normal"
    # Twice the window's largest raw score is needed: 2.1 is not.
    thr, state = _warm_telemanom(span=105, spike_margin=1.0, min_error=0.1)
    assert thr.step(state, 2.1)[1].status == "normal"


def _excursion(thr, state, block):
    statuses = []
    for x in block:
        state, d = thr.step(state, x)
        statuses.append(d.status)
    return state, statuses


def test_telemanom_in_window_ends_the_run_when_the_anomaly_raises_its_own_epsilon():
    # Five errors of 10, then a tail of 2.0: far above the protected ε (< 1.5), but in the
    # window that holds the five 10s (μ ≈ 1.28, σ ≈ 1.40) telemanom's z is 6: ε ≈ 9.67.
    block = [10.0] * 5 + [2.0] * 8 + [1.05] * 3
    thr, state = _warm_telemanom()
    _, plain = _excursion(thr, state, block)
    assert plain == ["anomalous"] * 15 + ["normal"]  # the tail is a run, then 2 buffer steps
    thr, state = _warm_telemanom(in_window=True)
    protected = list(state["buf"])
    after, judged = _excursion(thr, state, block)
    # The 10s are hits; the first 2.0 is judged in the window and is not, so only the error
    # buffer (3: the hit and 2 steps after it) carries the episode past the anomaly.
    assert judged == ["anomalous"] * 7 + ["normal"] * 9
    # By hand: the window for the first 2.0 is the protected errors, the five 10s, the 2.0.
    errors = np.array((protected + [10.0] * 5 + [2.0])[-200:])
    from stream_detector.thresholds.telemanom import find_z

    assert find_z(errors, 3) == 6.0
    eps = errors.mean() + errors.std() * 6.0
    assert eps == pytest.approx(9.669, abs=1e-3)
    at_tail, _ = _excursion(thr, state, block[:5])
    assert thr.step(at_tail, 2.0)[1].threshold == pytest.approx(eps)  # what 2.0 was held to
    # The excursion ends back under the protected ε; nothing anomalous was learned.
    assert after["exc"] == [] and after["exc_learned"] == 0
    assert 10.0 not in after["buf"][-9:] and after["buf"][-3:] == [1.05] * 3


def test_telemanom_in_window_enters_a_run_as_before_and_survives_a_round_trip():
    thr, state = _warm_telemanom(in_window=True)
    plain_thr, plain = _warm_telemanom()
    assert thr.step(state, 10.0)[1] == plain_thr.step(plain, 10.0)[1]  # entry: same decision
    block = [10.0] * 20 + [2.0] * 8 + [1.05] * 3
    mid, first = _excursion(thr, state, block[:21])
    # What the Redis store hands back mid-excursion: the excursion's 21 errors packed.
    packed = pack_state(mid)
    assert set(packed["exc"]) == {"__f64__"}
    restored = unpack_state(json.loads(json.dumps(packed)))
    left, rest = _excursion(thr, mid, block[21:])
    left_restored, rest_restored = _excursion(thr, restored, block[21:])
    assert rest == rest_restored and left == left_restored
    assert first + rest == ["anomalous"] * 22 + ["normal"] * 9


def test_telemanom_window_bounds_how_long_a_history_sets_epsilon():
    """The forty-fourth look's premise: ε is fitted on the last `window` errors only, so a
    level the stream has left stops setting it after `window` steps, and not before."""

    def stream(window: int) -> tuple[list[float], str]:
        thr = build_threshold(
            "telemanom", span=1, window=window, batch=20, error_buffer=1, warmup=0,
            min_value_ratio=0.0, min_error=0.0, spike_margin=0.0, relearn_after=0,
            inverted=False,
        )  # fmt: skip
        state = thr.initial_state(None)
        rng = np.random.default_rng(3)
        eps = []
        for i, x in enumerate(
            np.r_[1.0 + 0.1 * rng.uniform(size=400), 0.5 + 0.1 * rng.uniform(size=200)]
        ):
            state, _ = thr.step(state, float(x))
            if i + 1 in (200, 600):
                eps.append(state["eps"])
        return eps, thr.step(state, 1.0)[1].status

    (short_full, short_after), short_probe = stream(200)
    (long_full, long_after), long_probe = stream(400)
    assert short_full == long_full, "until the shorter window is full the two are one threshold"
    # 200 steps after the level fell, the short window holds only the new level …
    assert short_after < 1.0 and short_probe == "anomalous"
    # … and the long one still half the old, so the old level is normal to it.
    assert long_after > 1.1 and long_probe == "normal"
