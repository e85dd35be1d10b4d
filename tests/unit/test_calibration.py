"""z-score calibration: the map on hand-computed knots, its prior, and the engine using it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_detector.app import build_engine
from stream_detector.errors import ConfigError
from stream_detector.offline import run_offline
from stream_detector.settings import Settings
from stream_detector.thresholds.base import ScorePrior
from stream_detector.thresholds.calibration import (
    HALF_NORMAL_LOG_MEAN,
    HALF_NORMAL_LOG_STD,
    HALF_NORMAL_MEAN,
    HALF_NORMAL_STD,
    ScoreCalibrator,
    half_normal_quantile,
)
from tests.unit.test_engine import MeanAbsModel

QUANTILES = {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "p99.9": 5.0, "max": 6.0}
PRIOR = ScorePrior(n=9999, mean=1.2, std=0.9, log_mean=0.0, log_std=0.5, quantiles=QUANTILES)


def test_half_normal_quantiles_are_the_familiar_ones() -> None:
    assert half_normal_quantile(0.5) == pytest.approx(0.6745, abs=1e-4)
    assert half_normal_quantile(0.95) == pytest.approx(1.9600, abs=1e-4)
    assert half_normal_quantile(0.99) == pytest.approx(2.5758, abs=1e-4)


def test_knots_send_training_quantiles_to_half_normal_quantiles() -> None:
    cal = ScoreCalibrator.from_prior(PRIOR)
    assert cal.raw == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    expected = [0.0, 0.67449, 1.64485, 1.95996, 2.57583, 3.29053, 3.89059]  # max: q = n/(n+1)
    assert cal.calibrated == pytest.approx(expected, abs=1e-4)
    assert cal(0.0) == 0.0
    assert cal(1.5) == pytest.approx((0.67449 + 1.64485) / 2, abs=1e-4)
    assert cal(4.0) == pytest.approx(2.57583, abs=1e-4)
    # Beyond the training maximum the last slope continues: 3.89059 + (3.89059 - 3.29053).
    assert cal(7.0) == pytest.approx(4.49065, abs=1e-4)
    xs = np.linspace(0, 20, 500)
    assert np.all(np.diff([cal(x) for x in xs]) > 0), "monotone: the order of scores is kept"


def test_tied_quantiles_keep_the_map_a_function() -> None:
    tied = ScorePrior(1000, 0.1, 0.1, 0.0, 1.0, {"p50": 0.1, "p90": 0.2, "p95": 0.2, "p99": 0.5})
    cal = ScoreCalibrator.from_prior(tied)
    assert cal.raw == (0.0, 0.1, 0.2, 0.5)
    assert cal(0.2) == pytest.approx(half_normal_quantile(0.9))


def test_nothing_to_calibrate_on_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to calibrate"):
        ScoreCalibrator.from_prior(ScorePrior(10, 0.0, 0.0, 0.0, 0.0, {"p50": 0.0, "max": 0.0}))
    with pytest.raises(ValueError, match="increase strictly"):
        ScoreCalibrator((0.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def test_the_calibrated_prior_has_the_half_normal_moments() -> None:
    z = np.abs(np.random.default_rng(0).standard_normal(2_000_000))
    assert pytest.approx(z.mean(), abs=2e-3) == HALF_NORMAL_MEAN
    assert pytest.approx(z.std(), abs=2e-3) == HALF_NORMAL_STD
    assert pytest.approx(np.log(z).mean(), abs=5e-3) == HALF_NORMAL_LOG_MEAN
    assert pytest.approx(np.log(z).std(), abs=5e-3) == HALF_NORMAL_LOG_STD
    prior = ScoreCalibrator.from_prior(PRIOR).calibrated_prior(PRIOR)
    assert prior.n == PRIOR.n and prior.mean == pytest.approx(math.sqrt(2 / math.pi))
    assert prior.quantiles["p99"] == pytest.approx(2.57583, abs=1e-4)


class QuantileModel(MeanAbsModel):
    score_prior = PRIOR


def _settings(calibration: str) -> Settings:
    return Settings(
        threshold={"kind": "train_sigma", "params": {"k": 3}, "calibration": calibration},
        alerts={"hold_down": 5, "lead": 0},
    )


def test_the_engine_thresholds_calibrated_scores_and_stamps_the_map() -> None:
    rng = np.random.default_rng(1)
    values = np.abs(rng.normal(1.0, 0.3, (400, 2))).astype(np.float32)
    values[200:210] = 9.0  # raw 9 → z ≈ 5.7
    raw = build_engine(_settings("none"), QuantileModel())
    calibrated = build_engine(_settings("zscore"), QuantileModel())
    assert calibrated.describe()["calibration"]["raw"][1] == 1.0
    assert "calibration" not in raw.describe()
    assert calibrated.config_version != raw.config_version
    calibrated.emit_scores = True
    run = run_offline(calibrated, "A", values)
    cal = ScoreCalibrator.from_prior(PRIOR)
    windows = np.stack([values[i : i + 5] for i in range(len(values) - 4)])
    raw_scores = QuantileModel().score_raw(windows)
    assert run.scores == pytest.approx([cal(float(s)) for s in raw_scores], rel=1e-6)
    opened = [a for a in run.alerts if a.state == "open"]
    assert opened and all(200 <= a.first_seq <= 214 for a in opened)
    # train_sigma k=3 on the calibrated prior: mean + 3·std of |N(0, 1)|.
    assert opened[0].threshold == pytest.approx(HALF_NORMAL_MEAN + 3 * HALF_NORMAL_STD)
    assert opened[0].score == pytest.approx(cal(9.0), rel=1e-6)


def test_calibration_without_training_scores_fails_at_start() -> None:
    class NoPrior(MeanAbsModel):
        score_prior = None

    with pytest.raises(ConfigError, match="SD_THRESHOLD__CALIBRATION"):
        build_engine(_settings("zscore"), NoPrior())
