"""telemanom's non-parametric dynamic threshold, in streaming form.

Hundman et al., KDD 2018 (``telemanom/errors.py``). Scores are smoothed by an EWMA (span
``span``). Over the last ``window`` smoothed scores, ε = μ + z·σ takes the z in [2.5, 12)
that best trades the drop in mean and standard deviation when the points above ε (padded
by ``error_buffer``) are removed against how many points and sequences that flags:
score(z) = (Δμ/μ + Δσ/σ) / (|sequences|² + |points|), with at most 5 sequences and under
half the points. The same is done on the errors flipped around their mean, so an
unusually *low* error counts too. A point above ε is kept only if it stands at least a
fraction ``p`` above the largest normal smoothed score in the window (telemanom's pruning,
applied to the newest point).

Streaming form: ε is recomputed every ``batch`` scores from the window, as telemanom
recomputes it for every new batch of 70 values; anomalous points are not added to the
window (protected update). Not carried over: telemanom's checks against the telemetry
values themselves (the threshold sees scores only) and its retrospective pruning of whole
sequences found earlier in a window.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from stream_detector.thresholds.base import (
    Decision,
    ScorePrior,
    ThresholdState,
    ThresholdStrategy,
    register_threshold,
)


def _dilate(flags: np.ndarray, radius: int) -> np.ndarray:
    """Mark every index within `radius` of a flagged one (telemanom's error buffer)."""
    if radius <= 1 or not flags.any():
        return flags
    kernel = np.ones(2 * radius - 1, dtype=np.int64)
    return np.convolve(flags.astype(np.int64), kernel, mode="same") > 0


def _n_sequences(flags: np.ndarray) -> int:
    """Runs of flagged points longer than one point (telemanom ignores single points)."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return int(np.sum((edges[1::2] - edges[::2]) > 1))


def find_z(errors: np.ndarray, error_buffer: int, z_min: float = 2.5, z_max: float = 12.0) -> float:
    """telemanom's `find_epsilon`: the z of ε = μ + zσ that maximises its trade-off score."""
    mean, sd = float(errors.mean()), float(errors.std())
    best_score, best_z = 0.0, z_max
    if sd == 0 or mean == 0:
        return best_z
    for z in np.arange(z_min, z_max, 0.5):
        eps = mean + sd * z
        above = errors > eps
        if not above.any():
            continue
        flagged = _dilate(above, error_buffer)
        kept = errors[errors < eps]
        n_seq = _n_sequences(flagged)
        n_flag = int(flagged.sum())
        score = ((mean - kept.mean()) / mean + (sd - kept.std()) / sd) / (n_seq**2 + n_flag)
        if score >= best_score and n_seq <= 5 and n_flag < len(errors) * 0.5:
            best_score, best_z = float(score), float(z)
    return best_z


@register_threshold("telemanom")
class TelemanomThreshold(ThresholdStrategy):
    # The EWMA of the scores must advance on every score, anomalous or not: it is
    # smoothing, not a model of normal. Everything else is protected.
    volatile_keys: ClassVar[frozenset[str]] = frozenset({"es", "n"})

    def __init__(
        self,
        span: int = 105,
        window: int = 2100,
        batch: int = 70,
        error_buffer: int = 100,
        p: float = 0.13,
        warmup: int = 500,
        inverted: bool = True,
    ) -> None:
        if span < 1 or window < 2 * batch or batch < 1 or error_buffer < 0 or not 0 <= p < 1:
            raise ValueError("need span >= 1, window >= 2·batch, batch >= 1, 0 <= p < 1")
        self.span = span
        self.window = window
        self.batch = batch
        self.error_buffer = error_buffer
        self.p = p
        self.warmup = warmup
        self.inverted = inverted

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "span": self.span,
            "window": self.window,
            "batch": self.batch,
            "error_buffer": self.error_buffer,
            "p": self.p,
            "warmup": self.warmup,
            "inverted": self.inverted,
        }

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        return {
            "es": None,
            "buf": [],
            "n": 0,
            "since": 0,
            "eps": None,
            "eps_inv": None,
            "mean": None,
            "normal_max": None,
        }

    def _refresh(self, state: ThresholdState) -> None:
        errors = np.asarray(state["buf"], dtype=np.float64)
        mean, sd = float(errors.mean()), float(errors.std())
        state["mean"] = mean
        state["eps"] = mean + sd * find_z(errors, self.error_buffer)
        state["normal_max"] = float(errors.max())
        if self.inverted:
            flipped = 2 * mean - errors
            state["eps_inv"] = mean + sd * find_z(flipped, self.error_buffer)
        state["since"] = 0

    def step(self, state: ThresholdState, score: float) -> tuple[ThresholdState, Decision]:
        state = dict(state)
        alpha = 2.0 / (self.span + 1.0)
        es = score if state["es"] is None else state["es"] + alpha * (score - state["es"])
        state["es"] = es
        state["n"] += 1
        ready = state["n"] > self.warmup and state["eps"] is not None
        if ready:
            high = es > state["eps"] and es * (1 - self.p) >= state["normal_max"]
            low = (
                self.inverted
                and state["eps_inv"] is not None
                and 2 * state["mean"] - es > state["eps_inv"]
            )
            if high or low:
                return state, Decision("anomalous", float(state["eps"]))
        threshold = None if state["eps"] is None else float(state["eps"])
        if math.isfinite(es):
            # Learn only normal points; ε is recomputed every `batch` of them.
            state["buf"] = [*state["buf"], es][-self.window :]
            state["since"] += 1
            if len(state["buf"]) >= 2 * self.batch and (
                state["eps"] is None or state["since"] >= self.batch
            ):
                self._refresh(state)
        return state, Decision("normal" if ready else "not_ready", threshold)
