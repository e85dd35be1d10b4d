"""Thresholds fixed at training time, as the seeds set them: a percentile, or mean + k·σ.

They never adapt, so they are the honest baseline for the adaptive ones: whatever the
adaptive strategies gain or lose is measured against these.
"""

from __future__ import annotations

from typing import Any

from stream_detector.thresholds.base import (
    Decision,
    ScorePrior,
    ThresholdState,
    ThresholdStrategy,
    register_threshold,
)


def _judge(state: ThresholdState, score: float) -> tuple[ThresholdState, Decision]:
    limit = state["threshold"]
    if limit is None:
        return state, Decision("not_ready", None)
    return state, Decision("anomalous" if score > limit else "normal", float(limit))


@register_threshold("train_quantile")
class TrainQuantileThreshold(ThresholdStrategy):
    """Alarm above a quantile of the training scores (the chapter's 'percentile' method)."""

    def __init__(self, quantile: str = "p99", factor: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.quantile = quantile
        self.factor = factor

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "quantile": self.quantile, "factor": self.factor}

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        if prior is None or self.quantile not in prior.quantiles:
            have = sorted(prior.quantiles) if prior else []
            raise ValueError(
                f"train_quantile needs the training quantile {self.quantile!r}; the "
                f"checkpoint's calibration has {have}"
            )
        return {"threshold": prior.quantiles[self.quantile] * self.factor}

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        return _judge(state, score)


@register_threshold("train_sigma")
class TrainSigmaThreshold(ThresholdStrategy):
    """Alarm above mean + k·σ of the training scores (the LSTM-AE seed's rule, k = 3)."""

    def __init__(self, k: float = 3.0) -> None:
        if k <= 0:
            raise ValueError("k must be positive")
        self.k = k

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k}

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        if prior is None:
            raise ValueError("train_sigma needs the checkpoint's training calibration")
        return {"threshold": prior.mean + self.k * prior.std}

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        return _judge(state, score)


@register_threshold("fixed")
class FixedThreshold(ThresholdStrategy):
    """Alarm above a value chosen elsewhere: by hand, or offline on labelled data
    (`stream_detector.evaluation.calibrate`: F1-optimal or a false-positive-rate target)."""

    def __init__(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"value must be positive, got {value}")
        self.value = float(value)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        return {"threshold": self.value}

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        return _judge(state, score)
