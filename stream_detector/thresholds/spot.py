"""SPOT and DSPOT: streaming peaks-over-threshold with a generalised Pareto tail.

Siffer et al., "Anomaly Detection in Streams with Extreme Value Theory", KDD 2017. The first
``n_init`` normal scores calibrate an initial threshold t (their ``level`` quantile); the
excesses over t (the peaks) are fitted with a generalised Pareto distribution by Grimshaw's
method, which gives the threshold z_q that a normal score exceeds with probability ``q``
(the risk). Then, per score: above z_q is an anomaly and is not learned; between t and z_q
is a new peak and the tail is refitted; below t is normal. DSPOT runs the same on the
residual against a moving average of the last ``depth`` normal scores, to follow drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_detector.thresholds.base import (
    Decision,
    ScorePrior,
    ThresholdState,
    ThresholdStrategy,
    register_threshold,
)


def gpd_log_likelihood(peaks: np.ndarray, gamma: float, sigma: float) -> float:
    if sigma <= 0:
        return -math.inf
    n = len(peaks)
    if abs(gamma) < 1e-12:
        return -n * math.log(sigma) - float(peaks.sum()) / sigma
    z = 1.0 + gamma * peaks / sigma
    if np.any(z <= 0):
        return -math.inf
    return -n * math.log(sigma) - (1.0 + 1.0 / gamma) * float(np.log(z).sum())


def _roots(f: Any, lo: float, hi: float, n_grid: int = 64, geometric: bool = False) -> list[float]:
    """Sign changes of f on a grid over [lo, hi], refined by bisection."""
    if not lo < hi:
        return []
    xs = np.geomspace(lo, hi, n_grid) if geometric else np.linspace(lo, hi, n_grid)
    ys = np.array([f(x) for x in xs])
    found = []
    for i in range(n_grid - 1):
        a, b, fa, fb = xs[i], xs[i + 1], ys[i], ys[i + 1]
        if not (np.isfinite(fa) and np.isfinite(fb)) or fa * fb > 0:
            continue
        for _ in range(60):
            mid = 0.5 * (a + b)
            fm = f(mid)
            if fa * fm <= 0:
                b = mid
            else:
                a, fa = mid, fm
        found.append(0.5 * (a + b))
    return found


def fit_gpd(peaks: Sequence[float]) -> tuple[float, float]:
    """(gamma, sigma) maximising the GPD likelihood of the excesses, by Grimshaw's method.

    The likelihood's stationary points satisfy u(x)·v(x) = 1 with x = γ/σ; each root gives
    γ = v(x) − 1, σ = γ / x. The exponential case (γ = 0, σ = mean) is always a candidate.
    """
    y = np.asarray(peaks, dtype=np.float64)
    if len(y) == 0 or np.any(y <= 0):
        raise ValueError("peaks must be a non-empty set of positive excesses")
    y_min, y_max, y_mean = float(y.min()), float(y.max()), float(y.mean())

    def u(x: float) -> float:
        return float(np.mean(1.0 / (1.0 + x * y)))

    def v(x: float) -> float:
        return 1.0 + float(np.mean(np.log1p(x * y)))

    def w(x: float) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            return u(x) * v(x) - 1.0

    eps = 1e-8
    lo = -1.0 / y_max + eps
    candidates = _roots(w, lo, -eps)
    if y_min < y_mean:
        # Positive roots lie below 2(Ȳ − Y_min)/Y_min² (Grimshaw); x = 0 is a trivial root,
        # so start just above it. The range spans decades: search it on a log grid.
        upper = 2 * (y_mean - y_min) / (y_min * y_min)
        candidates += _roots(w, 1e-4 / y_mean, upper, n_grid=160, geometric=True)
    best = (0.0, y_mean)
    best_ll = gpd_log_likelihood(y, 0.0, y_mean)
    for x in candidates:
        if abs(x) < 1e-12:
            continue
        gamma = v(x) - 1.0
        sigma = gamma / x
        ll = gpd_log_likelihood(y, gamma, sigma)
        if ll > best_ll:
            best, best_ll = (gamma, sigma), ll
    return best


def tail_quantile(t: float, gamma: float, sigma: float, q: float, n: int, n_peaks: int) -> float:
    """The score exceeded with probability q, given the tail above t."""
    r = q * n / n_peaks
    if abs(gamma) < 1e-12:
        return t - sigma * math.log(r)
    return t + (sigma / gamma) * (r ** (-gamma) - 1.0)


@register_threshold("spot")
class SpotThreshold(ThresholdStrategy):
    """SPOT; with ``depth`` > 0, DSPOT (residuals against a moving average)."""

    def __init__(
        self,
        q: float = 1e-4,
        level: float = 0.98,
        n_init: int = 500,
        depth: int = 0,
        max_peaks: int = 1000,
    ) -> None:
        if not 0 < q < 1 - level or not 0 < level < 1:
            raise ValueError("need 0 < level < 1 and 0 < q < 1 - level")
        if n_init < 20 or depth < 0 or max_peaks < 10:
            raise ValueError("need n_init >= 20, depth >= 0, max_peaks >= 10")
        self.q = q
        self.level = level
        self.n_init = n_init
        self.depth = depth
        self.max_peaks = max_peaks

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "q": self.q,
            "level": self.level,
            "n_init": self.n_init,
            "depth": self.depth,
            "max_peaks": self.max_peaks,
        }

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        # Calibrated on the channel's own first scores: training scores of a window model
        # are systematically lower than live ones, so they would set t too low.
        return {"init": [], "recent": [], "t": None, "z": None, "peaks": [], "n": 0}

    def _residual(self, state: ThresholdState, score: float) -> float:
        if self.depth and state["recent"]:
            return score - float(np.mean(state["recent"]))
        return score

    def _remember(self, state: ThresholdState, score: float) -> None:
        if self.depth:
            state["recent"] = [*state["recent"], score][-self.depth :]

    def _offset(self, state: ThresholdState) -> float:
        return float(np.mean(state["recent"])) if self.depth and state["recent"] else 0.0

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        state = dict(state)  # lists inside are replaced, never mutated
        if state["t"] is None:
            x = self._residual(state, score)
            state["init"] = [*state["init"], x]
            self._remember(state, score)
            if len(state["init"]) >= self.n_init:
                self._calibrate(state)
            return state, Decision("not_ready", None)
        x = self._residual(state, score)
        limit = float(state["z"]) + self._offset(state)
        if x > state["z"]:
            return state, Decision("anomalous", limit)
        state["n"] += 1
        if x > state["t"]:
            state["peaks"] = [*state["peaks"], x - state["t"]][-self.max_peaks :]
            self._refit(state)
        self._remember(state, score)
        return state, Decision("normal", float(state["z"]) + self._offset(state))

    def _calibrate(self, state: ThresholdState) -> None:
        init = np.asarray(state["init"], dtype=np.float64)
        t = float(np.quantile(init, self.level))
        state["t"] = t
        state["n"] = len(init)
        state["peaks"] = [float(p) for p in (init[init > t] - t)][-self.max_peaks :]
        state["init"] = []
        self._refit(state)

    def _refit(self, state: ThresholdState) -> None:
        peaks = [p for p in state["peaks"] if p > 0]
        if len(peaks) < 2:
            # Too few excesses to fit a tail: fall back to t plus the largest excess seen.
            state["z"] = state["t"] + (max(peaks) if peaks else abs(state["t"]) * 0.1 + 1e-12)
            return
        gamma, sigma = fit_gpd(peaks)
        state["z"] = tail_quantile(state["t"], gamma, sigma, self.q, state["n"], len(peaks))
