"""A streaming quantile of normal scores by the P² algorithm; alarm above it times a margin.

Jain & Chlamtac, "The P² algorithm for dynamic calculation of quantiles and histograms
without storing observations", CACM 1985: five markers whose heights track the minimum,
p/2, p, (1+p)/2 and the maximum, moved by piecewise-parabolic interpolation. O(1) state
that fits in a Redis hash. Like River's ``QuantileFilter``: no alarm before ``warmup``
scores, and anomalous scores are not learned.
"""

from __future__ import annotations

import math
from typing import Any

from stream_detector.thresholds.base import (
    Decision,
    ScorePrior,
    ThresholdState,
    ThresholdStrategy,
    register_threshold,
)


def p2_update(state: ThresholdState, x: float, p: float) -> ThresholdState:
    """One observation into the P² markers; returns a new state."""
    heights = list(state["q"])
    if len(heights) < 5:
        heights.append(x)
        heights.sort()
        return {"q": heights, "n": list(state["n"]), "np": list(state["np"])}
    pos = list(state["n"])
    desired = list(state["np"])
    if x < heights[0]:
        heights[0] = x
        k = 0
    elif x >= heights[4]:
        heights[4] = x
        k = 3
    else:
        k = next(i for i in range(4) if heights[i] <= x < heights[i + 1])
    for i in range(k + 1, 5):
        pos[i] += 1
    increments = (0.0, p / 2, p, (1 + p) / 2, 1.0)
    desired = [d + inc for d, inc in zip(desired, increments, strict=True)]
    for i in (1, 2, 3):
        d = desired[i] - pos[i]
        if (d >= 1 and pos[i + 1] - pos[i] > 1) or (d <= -1 and pos[i - 1] - pos[i] < -1):
            s = 1 if d > 0 else -1
            candidate = heights[i] + s / (pos[i + 1] - pos[i - 1]) * (
                (pos[i] - pos[i - 1] + s) * (heights[i + 1] - heights[i]) / (pos[i + 1] - pos[i])
                + (pos[i + 1] - pos[i] - s) * (heights[i] - heights[i - 1]) / (pos[i] - pos[i - 1])
            )
            if heights[i - 1] < candidate < heights[i + 1]:
                heights[i] = candidate
            else:  # the parabola overshoots: move linearly instead
                heights[i] = heights[i] + s * (heights[i + s] - heights[i]) / (pos[i + s] - pos[i])
            pos[i] += s
    return {"q": heights, "n": pos, "np": desired}


def p2_initial(p: float) -> ThresholdState:
    return {"q": [], "n": [1, 2, 3, 4, 5], "np": [1, 1 + 2 * p, 1 + 4 * p, 3 + 2 * p, 5]}


def p2_estimate(state: ThresholdState) -> float | None:
    heights = state["q"]
    if len(heights) < 5:
        return None
    return float(heights[2])


@register_threshold("p2_quantile")
class P2QuantileThreshold(ThresholdStrategy):
    """Alarm above ``margin`` × the running ``p`` quantile of this channel's normal scores."""

    def __init__(self, p: float = 0.99, margin: float = 1.5, warmup: int = 200) -> None:
        if not 0 < p < 1 or margin < 1 or warmup < 5:
            raise ValueError("need 0 < p < 1, margin >= 1, warmup >= 5")
        self.p = p
        self.margin = margin
        self.warmup = warmup

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "p": self.p, "margin": self.margin, "warmup": self.warmup}

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        return {"count": 0, **p2_initial(self.p)}

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        estimate = p2_estimate(state)
        limit = None if estimate is None else estimate * self.margin
        warm = state["count"] >= self.warmup and limit is not None
        if warm and limit is not None and score > limit:
            return state, Decision("anomalous", limit)
        if not math.isfinite(score):
            return state, Decision("normal" if warm else "not_ready", limit)
        markers = p2_update(state, score, self.p)
        new_state = {"count": state["count"] + 1, **markers}
        return new_state, Decision("normal" if warm else "not_ready", limit)
