"""A loaded checkpoint seen through the engine's `ScoringModel` interface."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stream_detector.records import ModelInfo
from stream_detector.thresholds.base import ScorePrior
from stream_detector.training.checkpoint import Checkpoint, load_checkpoint

_Z90 = 1.2815515655446004  # standard normal quantile of 0.9


class ServedModel:
    """Scores raw (unscaled) windows with a checkpoint; exposes what the engine needs."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.window = checkpoint.window
        self.stride = checkpoint.stride
        self.n_features = checkpoint.n_features
        self.channels = list(checkpoint.channels)
        self.model_info = ModelInfo(name=checkpoint.detector.kind, version=checkpoint.model_version)
        self.score_prior = _prior_from(checkpoint)

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> ServedModel:
        return cls(load_checkpoint(path, device=device))

    def score_raw(self, windows: np.ndarray) -> np.ndarray:
        return self.checkpoint.score_raw(windows)


def _prior_from(checkpoint: Checkpoint) -> ScorePrior | None:
    """Normal-score statistics from training, with a robust log-scale estimate.

    Training errors are right-skewed and a few windows dominate their mean and std, so the
    log-scale centre and spread come from the median and the 90th percentile, as if the
    errors were log-normal.
    """
    cal = checkpoint.calibration
    if cal is None or cal.n == 0:
        return None
    p50 = max(cal.quantiles.get("p50", cal.mean), 1e-12)
    p90 = max(cal.quantiles.get("p90", p50), p50)
    log_mean = math.log(p50)
    log_std = max((math.log(p90) - log_mean) / _Z90, 1e-3)
    return ScorePrior(
        n=cal.n,
        mean=cal.mean,
        std=cal.std,
        log_mean=log_mean,
        log_std=log_std,
        quantiles=dict(cal.quantiles),
        tail=tuple(cal.tail),
    )
