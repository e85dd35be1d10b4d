"""Alarm when a score beats the largest normal score of the recent past by a margin.

telemanom keeps an anomaly only if its peak error exceeds the largest remaining (normal)
error by a minimum percent decrease p (0.13); it judges windows of a few thousand errors at
a time. This is that rule in streaming form: the threshold is (1 + ``margin``) × the
largest normal score among the last ``blocks`` × ``block_size`` windows (kept as block
maxima, so the state stays a few numbers), starting from the training maximum. It is
scale-free (no σ to shrink over quiet stretches) and only a score the channel has not shown
recently alarms, which is what an operator calls new.

Protected update: anomalous scores are not learned, so an incident cannot raise its own
threshold, except after ``relearn_after`` anomalous windows in a row (0: never).

The defaults (margin 2 %, re-learning after 200 windows; with 3-of-5 episode opening they
were the daemon's default configuration until the race's second round) were chosen without
test labels, by the rule in docs/threshold-race.md ("The threshold race"): the best F1 on
synthetic anomalies injected into each channel's held-out train part, among variants that
raise at most 0.05 episodes per 1,000 clean held-out steps. telemanom's own p is 0.13. A level
shift that persists is then learned as the new normal and its episode resolves, instead of
staying open to the end of the stream.

With ``span`` > 1 the rule judges an EWMA of the scores (α = 2 / (span + 1)), as telemanom
smooths its prediction errors: a predictor's errors are spiky, and one noisy step should
not count as a new maximum. The threshold is then in smoothed units.
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


@register_threshold("recent_max")
class RecentMaxThreshold(ThresholdStrategy):
    # The run of consecutive anomalous windows and the smoother move on every score.
    volatile_keys = frozenset({"run", "smooth"})

    def __init__(
        self,
        margin: float = 0.02,
        blocks: int = 10,
        block_size: int = 200,
        warmup: int = 100,
        relearn_after: int = 200,
        span: int = 1,
    ) -> None:
        if margin < 0 or blocks < 1 or block_size < 1 or warmup < 0 or relearn_after < 0:
            raise ValueError(
                "need margin >= 0, blocks >= 1, block_size >= 1, warmup >= 0, relearn_after >= 0"
            )
        if span < 1:
            raise ValueError(f"span must be at least 1, got {span}")
        self.span = span
        self.margin = margin
        self.blocks = blocks
        self.block_size = block_size
        self.warmup = warmup
        self.relearn_after = relearn_after

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "margin": self.margin,
            "blocks": self.blocks,
            "block_size": self.block_size,
            "warmup": self.warmup,
            "relearn_after": self.relearn_after,
            "span": self.span,
        }

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        seed = [] if prior is None or "max" not in prior.quantiles else [prior.quantiles["max"]]
        return {"n": 0, "maxima": seed, "current": None, "fill": 0, "run": 0, "smooth": None}

    def step(
        self, state: ThresholdState, raw: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        previous = state.get("smooth")
        alpha = 2.0 / (self.span + 1.0)
        score = raw if previous is None else alpha * raw + (1.0 - alpha) * float(previous)
        maxima: list[float] = list(state["maxima"])
        current = state["current"]
        seen = maxima + ([] if current is None else [float(current)])
        limit = max(seen) * (1.0 + self.margin) if seen else math.inf
        warm = int(state["n"]) >= self.warmup and bool(seen)
        anomalous = warm and score > limit
        run = int(state["run"]) + 1 if anomalous else 0
        decision = Decision(
            "anomalous" if anomalous else ("normal" if warm else "not_ready"),
            limit if seen else None,
        )
        if anomalous and not (self.relearn_after and run > self.relearn_after):
            return {**state, "run": run, "smooth": score}, decision
        current = score if current is None else max(float(current), score)
        fill = int(state["fill"]) + 1
        if fill >= self.block_size:
            maxima = [*maxima, current][-self.blocks :]
            current, fill = None, 0
        new_state = {"n": int(state["n"]) + 1, "maxima": maxima, "current": current}
        return {**new_state, "fill": fill, "run": run, "smooth": score}, decision
