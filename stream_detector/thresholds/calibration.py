"""Score calibration: raw model scores onto the scale of |N(0, 1)|, before the threshold.

As Merlion's anomaly-score calibrator: a monotone, piecewise-linear map fitted on the
model's scores of its own training windows sends the training quantile q to the
half-normal quantile Φ⁻¹((1 + q) / 2). After it, a score of 3 means "as rare among training
windows as |z| = 3 is for a normal variable" (p ≈ 0.0027), whatever the model's units, so
one threshold (``ewma_sigma`` k, ``train_sigma``, a static value) reads the same for every
model and channel. Scores above the training maximum continue the last segment's slope, so
the order of large scores is kept; zero maps to zero.

The map is fixed by the checkpoint (no state): the threshold's Redis state, replay rule
and protected update are untouched, and the calibrated training prior (half-normal moments
and quantiles) seeds the threshold as the raw one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from statistics import NormalDist

from stream_detector.thresholds.base import PRIOR_QUANTILES, ScorePrior

_STD_NORMAL = NormalDist()
# Moments of |Z| and of log|Z|, Z ~ N(0, 1): the calibrated training distribution.
HALF_NORMAL_MEAN = math.sqrt(2 / math.pi)
HALF_NORMAL_STD = math.sqrt(1 - 2 / math.pi)
HALF_NORMAL_LOG_MEAN = -(0.5772156649015329 + math.log(2)) / 2
HALF_NORMAL_LOG_STD = math.pi / (2 * math.sqrt(2))


def half_normal_quantile(q: float) -> float:
    """The value |Z| stays below with probability q."""
    return _STD_NORMAL.inv_cdf((1 + q) / 2)


@dataclass(frozen=True)
class ScoreCalibrator:
    """Knots (raw score → calibrated score), strictly increasing in both coordinates."""

    raw: tuple[float, ...]
    calibrated: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.raw) != len(self.calibrated) or len(self.raw) < 2:
            raise ValueError("a calibrator needs at least two knots, as many raw as calibrated")
        for seq in (self.raw, self.calibrated):
            if any(b <= a for a, b in pairwise(seq)):
                raise ValueError(f"calibration knots must increase strictly, got {seq}")

    @classmethod
    def from_prior(cls, prior: ScorePrior) -> ScoreCalibrator:
        """Fit on the training scores' quantiles (p50 … p99.9 and the maximum)."""
        points = [(0.0, 0.0)]
        levels = dict(PRIOR_QUANTILES)
        if prior.n > 0:
            # The largest of n scores sits at about the n/(n+1) quantile.
            levels["max"] = prior.n / (prior.n + 1)
        for name, q in sorted(levels.items(), key=lambda item: item[1]):
            if name not in prior.quantiles:
                continue
            raw, z = float(prior.quantiles[name]), half_normal_quantile(q)
            # Ties (many equal training scores) keep the lowest z: the map stays a function.
            if raw > points[-1][0] and z > points[-1][1]:
                points.append((raw, z))
        if len(points) < 2:
            raise ValueError(
                "the checkpoint's training scores are all zero or lack quantiles: "
                "nothing to calibrate on"
            )
        return cls(tuple(p[0] for p in points), tuple(p[1] for p in points))

    def __call__(self, score: float) -> float:
        raw, cal = self.raw, self.calibrated
        if score <= raw[0]:
            slope = (cal[1] - cal[0]) / (raw[1] - raw[0])
            return cal[0] + (score - raw[0]) * slope
        for i in range(1, len(raw)):
            if score <= raw[i]:
                frac = (score - raw[i - 1]) / (raw[i] - raw[i - 1])
                return cal[i - 1] + frac * (cal[i] - cal[i - 1])
        slope = (cal[-1] - cal[-2]) / (raw[-1] - raw[-2])
        return cal[-1] + (score - raw[-1]) * slope

    def calibrated_prior(self, prior: ScorePrior) -> ScorePrior:
        """What training says about the calibrated scores: |N(0, 1)| by construction."""
        return ScorePrior(
            n=prior.n,
            mean=HALF_NORMAL_MEAN,
            std=HALF_NORMAL_STD,
            log_mean=HALF_NORMAL_LOG_MEAN,
            log_std=HALF_NORMAL_LOG_STD,
            quantiles={name: self(value) for name, value in prior.quantiles.items()},
        )

    def describe(self) -> dict[str, list[float]]:
        return {"raw": list(self.raw), "calibrated": list(self.calibrated)}
