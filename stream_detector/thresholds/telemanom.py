"""telemanom's non-parametric dynamic threshold, in streaming form.

Hundman et al., KDD 2018 (``telemanom/errors.py`` of the run published on 2018-05-19).
What telemanom does with a predictor's errors, and how each step is carried over:

- **Smoothing.** Errors are smoothed by an EWMA of span ``span`` (telemanom: 5 % of
  30 batches × 70 = 105).
- **ε.** Over the last ``window`` smoothed errors, ε = μ + z·σ takes the z in [2.5, 12)
  that best trades the drop in mean and standard deviation when the points above ε
  (padded by ``error_buffer``) are removed against how many points and sequences that
  flags: score(z) = (Δμ/μ + Δσ/σ) / (|sequences|² + |points|), with at most 5 sequences
  and under half the points (`find_z`). The same is done on the errors flipped around
  their mean, so an unusually *low* error counts too (``inverted``). telemanom recomputes
  ε for every new batch of 70 values; so does this, every ``batch`` learned errors.
- **Scale checks.** telemanom ignores errors that are small beside the signal: a point
  must exceed 5 % of the 5–95 % range of the recent telemetry values (``min_value_ratio``,
  read from the ``value`` the engine passes with each score), and nothing is flagged in
  a window whose largest error is under 0.05 (``min_error``, in score units: 0.05 means
  what telemanom meant only for errors in the raw units of SMAP/MSL's (-1, 1) values).
- **Pruning.** A sequence survives only if its peak stands at least a fraction ``p``
  (0.13) above the largest error of the window that was not flagged. Streamed: a point
  above ε is a hit once the peak of its run above ε so far clears that bar.
- **Error buffer.** telemanom pads each flagged point by ``error_buffer`` − 1 steps on
  both sides. Forward, the status stays anomalous for that many steps after the last hit;
  backward, the episode rules' ``lead`` setting back-dates an episode's start (the
  daemon's default configuration sets both to telemanom's 100).

Streaming form, and what differs: the decision about a score is made when it arrives,
against the ε of the last full batch (telemanom decides a batch of 70 at a time, with the
batch inside its own window). The window fills from the stream itself, alarms waiting for
``warmup`` scores, instead of judging the first 2,100 errors in hindsight; with
``prior_tail`` > 0 it starts from that many of the model's last training scores
(``ScorePrior.tail``) instead — mostly in-sample errors, smaller than a test stream's, so
on SMAP/MSL that start raised more false alarms (docs/threshold-race.md).
A single-step spike is flattened by the smoothing below any floor, so with
``spike_margin`` > 0 a raw score above (1 + ``spike_margin``) × every raw score of the
window (kept as block maxima) is a hit as well.
**Protected update:** scores flagged anomalous are not learned, so an incident cannot
raise its own threshold (telemanom's window takes every error) — except after
``relearn_after`` anomalous scores in a row (0: never), so that a lasting change of the
error level becomes the new normal instead of keeping an episode open forever.

**Judged in the window (``in_window``).** Protection has a cost telemanom does not pay:
after an anomaly the smoothed error decays over ~``span`` steps, and against an ε learned
from normal errors alone that tail stays "anomalous" long after the anomaly (the streamed
episodes ran ~170 steps longer than telemanom's on SMAP, docs/threshold-race.md). telemanom's ε
for those steps is computed on a window that holds the anomaly's own errors, which raises
it. With ``in_window``, from a hit until the smoothed error is back under the protected ε
(the *excursion*), a point is a hit only if it is also above the ε that `find_z` gives on
that window: the protected errors before the excursion, then every error of the excursion
so far, in order (causal). Entering a run is judged as before. The view itself is never
stored, but a point it clears is normal, and normal points are learned: the tail of an
anomaly then enters the protected window, which can move ε for later decisions.

**Pruned against the window (``prune_window``).** telemanom prunes a sequence against the
largest error of its window that is not flagged, and that includes an earlier run above ε
that was itself pruned: a new bump must clear the earlier ones by ``p``, not only the errors
under ε. By default the streamed form prunes against the largest error under ε, so a
channel whose errors bump above ε now and then raises a false episode at the first bump a
little higher than the last (SMAP's E-10 and A-7 in the thirteenth look, docs/threshold-race.md).
With ``prune_window`` a run's peak must clear every learned error of the window. What
differs still: once a long run is learned (``relearn_after``), its errors count too, where
telemanom would leave out what it flagged.

**A floor from training (``train_floor``).** telemanom's floor, ``min_error``, is one number
for every channel. With ``train_floor`` naming a quantile of the model's scores on its own
training windows (``"p95"``, ``"p99"``, ``"p99.9"`` or ``"max"``, from the checkpoint's
calibration), a smoothed error must also exceed that quantile to be a hit (a spike, the
raw score), so an error level the model reaches routinely on the data it learned from is
not an anomaly: a channel that jumps every few hundred steps in train and in test (MSL's F-5)
does not page at each jump. The inverted errors are not held to it (an unusually small error
is not measured against large ones). Off by default; a channel without those training scores
has no such floor.

Defaults: telemanom's published parameters (span 105, window 2,100, batch 70, error buffer
100, p 0.13, error floor 0.05), plus the two additions of this form — re-learning after 100
anomalous scores and spikes above 1.5 times the window's raw maximum — as chosen without
test labels in the threshold race (docs/threshold-race.md; the margin was 1.0, spikes above twice
the maximum, until the eighth look). ``min_error`` 0.05 assumes errors in the
raw units of SMAP/MSL (a checkpoint trained with ``--scaling none``, as `lstm_dt` is).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import numpy as np

from stream_detector.thresholds.base import (
    PRIOR_QUANTILES,
    Decision,
    ScorePrior,
    ThresholdState,
    ThresholdStrategy,
    register_threshold,
)

# The training-score quantiles a `train_floor` may name: those every checkpoint keeps.
TRAIN_FLOOR_QUANTILES = (*PRIOR_QUANTILES, "max")


class _Epsilons(NamedTuple):
    """What `find_z` makes of a window: its mean, ε, and the ε of its errors flipped around
    the mean (None unless the threshold is ``inverted``)."""

    mean: float
    eps: float
    eps_inv: float | None


def _dilate(flags: np.ndarray, radius: int) -> np.ndarray:
    """Mark every index within `radius` − 1 of a flagged one (telemanom's error buffer)."""
    if radius <= 1 or not flags.any():
        return flags
    # A running count instead of a convolution: O(n) whatever the radius, and this runs
    # 38 times per refresh on 2,100 errors, for every channel.
    n = len(flags)
    counts = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    index = np.arange(n)
    low = np.maximum(index - (radius - 1), 0)
    high = np.minimum(index + radius, n)
    return (counts[high] - counts[low]) > 0


def _pushed(items: list[float], item: float, limit: int) -> list[float]:
    """A new list: the last ``limit`` of ``items + [item]`` (``limit`` >= 2), copied once."""
    kept = items[-(limit - 1) :] if len(items) >= limit else items[:]
    kept.append(item)
    return kept


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
    # Smoothing, the recent telemetry values and the bookkeeping of the current run move
    # on every score, anomalous or not; the window of errors and what is derived from it
    # (ε, the largest normal error) are protected.
    volatile_keys: ClassVar[frozenset[str]] = frozenset(
        {"es", "n", "values", "run", "run_inv", "buffer_left", "streak", "exc", "exc_learned"}
    )

    def __init__(
        self,
        span: int = 105,
        window: int = 2100,
        batch: int = 70,
        error_buffer: int = 100,
        p: float = 0.13,
        warmup: int = 140,
        inverted: bool = True,
        min_error: float = 0.05,
        min_value_ratio: float = 0.05,
        relearn_after: int = 100,
        protect: bool = True,
        prior_tail: int = 0,
        spike_margin: float = 0.5,
        in_window: bool = False,
        prune_window: bool = False,
        train_floor: str | None = None,
    ) -> None:
        if span < 1 or batch < 1 or window < 2 * batch:
            raise ValueError("need span >= 1, batch >= 1 and window >= 2·batch")
        if error_buffer < 1 or not 0 <= p < 1 or warmup < 0 or relearn_after < 0:
            raise ValueError(
                "need error_buffer >= 1, 0 <= p < 1, warmup >= 0 and relearn_after >= 0"
            )
        if min_error < 0 or min_value_ratio < 0:
            raise ValueError("need min_error >= 0 and min_value_ratio >= 0")
        self.span = span
        self.window = window
        self.batch = batch
        self.error_buffer = error_buffer
        self.p = p
        self.warmup = warmup
        self.inverted = inverted
        self.min_error = min_error
        self.min_value_ratio = min_value_ratio
        self.relearn_after = relearn_after
        self.protect = protect
        if prior_tail < 0:
            raise ValueError("need prior_tail >= 0")
        self.prior_tail = prior_tail
        if spike_margin < 0:
            raise ValueError("need spike_margin >= 0 (0: off)")
        self.spike_margin = spike_margin
        self.in_window = in_window
        self.prune_window = prune_window
        if train_floor is not None and train_floor not in TRAIN_FLOOR_QUANTILES:
            raise ValueError(
                f"train_floor must be one of {', '.join(TRAIN_FLOOR_QUANTILES)} or null, "
                f"got {train_floor!r}"
            )
        self.train_floor = train_floor

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
            "min_error": self.min_error,
            "min_value_ratio": self.min_value_ratio,
            "relearn_after": self.relearn_after,
            "protect": self.protect,
            "prior_tail": self.prior_tail,
            "spike_margin": self.spike_margin,
            "in_window": self.in_window,
            "prune_window": self.prune_window,
            "train_floor": self.train_floor,
        }

    @property
    def _alpha(self) -> float:
        return 2.0 / (self.span + 1.0)

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        state: ThresholdState = {
            "es": None,
            "n": 0,
            "buf": [],
            "since": 0,
            "values": [],
            "eps": None,
            "eps_inv": None,
            "mean": None,
            "normal_max": None,
            "normal_max_inv": None,
            "floor": self.min_error,
            "run": 0.0,
            "run_inv": 0.0,
            "buffer_left": 0,
            "streak": 0,
            "raw_maxima": [],
            "raw_block": None,
            "raw_fill": 0,
            # The excursion's smoothed errors in order, and how many of them were learned
            # (those are also the last entries of "buf"): `in_window` only.
            "exc": [],
            "exc_learned": 0,
            "train_floor": self._train_floor(prior),
        }
        tail = [] if prior is None else [x for x in prior.tail if math.isfinite(x)]
        tail = tail[len(tail) - self.prior_tail :] if self.prior_tail else []
        if tail:
            es, smoothed = tail[0], []
            for x in tail:
                es += self._alpha * (x - es)
                smoothed.append(es)
            state["es"] = es
            state["buf"] = smoothed[-self.window :]
            for x in tail[-self.window :]:
                self._learn_raw(state, x)
            if len(state["buf"]) >= 2 * self.batch:
                self._refresh(state)
        return state

    def _epsilons(self, errors: np.ndarray) -> _Epsilons:
        mean, sd = float(errors.mean()), float(errors.std())
        eps = mean + sd * find_z(errors, self.error_buffer)
        if not self.inverted:
            return _Epsilons(mean, eps, None)
        return _Epsilons(mean, eps, mean + sd * find_z(2 * mean - errors, self.error_buffer))

    def _refresh(self, state: ThresholdState) -> None:
        errors = np.asarray(state["buf"], dtype=np.float64)
        mean, eps, eps_inv = self._epsilons(errors)
        state["mean"] = mean
        state["eps"] = eps
        state["normal_max"] = self._normal_max(errors, eps)
        if eps_inv is not None:
            state["eps_inv"] = eps_inv
            state["normal_max_inv"] = self._normal_max(2 * mean - errors, eps_inv)
        # telemanom measures the signal's spread once per window, as it does ε.
        state["floor"] = self._floor(state["values"])
        state["since"] = 0

    def _normal_max(self, errors: np.ndarray, eps: float) -> float:
        """The largest error a run's peak must clear by the fraction ``p`` (pruning)."""
        if self.prune_window:
            # telemanom's batch form prunes against the largest error of the window not
            # flagged, and a run above ε that was pruned is not flagged. Here that is every
            # learned error: under protection, everything but the hits.
            return float(errors.max())
        below = errors[errors <= eps]
        return float(below.max()) if len(below) else eps

    def _window_view(self, state: ThresholdState, es: float) -> _Epsilons | None:
        """The mean, ε and inverted ε of the window telemanom would judge ``es`` in: the
        protected errors learned before the excursion, then the excursion's own errors up
        to and including ``es``."""
        buf, exc = state["buf"], state["exc"]
        before = buf[: len(buf) - min(state["exc_learned"], len(buf))]
        errors = np.asarray((before + exc + [es])[-self.window :], dtype=np.float64)
        if len(errors) < 2 * self.batch:
            return None
        return self._epsilons(errors)

    def _learn_raw(self, state: ThresholdState, score: float) -> None:
        """Block maxima (``batch`` scores each) of the raw scores of the window."""
        block = score if state["raw_block"] is None else max(state["raw_block"], score)
        state["raw_fill"] += 1
        if state["raw_fill"] >= self.batch:
            state["raw_maxima"] = _pushed(state["raw_maxima"], block, self.window // self.batch)
            block, state["raw_fill"] = None, 0
        state["raw_block"] = block

    def _spike(self, state: ThresholdState, score: float, floor: float) -> bool:
        """A raw score well above every raw score of the window: one step the EWMA hides."""
        seen = state["raw_maxima"] + ([] if state["raw_block"] is None else [state["raw_block"]])
        if self.spike_margin == 0 or not seen:
            return False
        return score > max((1 + self.spike_margin) * max(seen), floor)

    def _train_floor(self, prior: ScorePrior | None) -> float:
        """The training-score quantile an upward hit must exceed (0: no such floor)."""
        if self.train_floor is None or prior is None:
            return 0.0
        value = prior.quantiles.get(self.train_floor)
        return float(value) if value is not None and math.isfinite(value) else 0.0

    def _floor(self, values: list[float]) -> float:
        """The error a point must beat however ε falls: scale checks against the signal."""
        floor = self.min_error
        if self.min_value_ratio > 0 and len(values) >= 2:
            high, low = np.percentile(np.asarray(values, dtype=np.float64), [95, 5])
            floor = max(floor, self.min_value_ratio * float(high - low))
        return floor

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        state = dict(state)
        es = score if state["es"] is None else state["es"] + self._alpha * (score - state["es"])
        state["es"] = es
        state["n"] += 1
        if value is not None and math.isfinite(value):
            state["values"] = _pushed(state["values"], float(value), self.window)
        ready = state["n"] > self.warmup and state["eps"] is not None
        hit = False
        outside = True  # back under the protected ε on both sides
        in_excursion = ready and self.in_window and bool(state.get("exc"))
        view = self._window_view(state, es) if in_excursion else None
        if ready:
            floor = float(state["floor"])
            # A state saved before `train_floor` existed has none.
            upward_floor = max(floor, float(state.get("train_floor", 0.0)))
            high = es > max(state["eps"], upward_floor)
            outside = not high
            if view is not None:
                high = high and es > view.eps
            state["run"] = max(state["run"], es) if high else 0.0
            hit = high and state["run"] * (1 - self.p) >= state["normal_max"]
            if self.inverted and state["eps_inv"] is not None:
                flipped = 2 * state["mean"] - es
                low = flipped > max(state["eps_inv"], floor)
                outside = outside and not low
                if view is not None and view.eps_inv is not None:
                    low = low and 2 * view.mean - es > view.eps_inv
                state["run_inv"] = max(state["run_inv"], flipped) if low else 0.0
                hit = hit or (low and state["run_inv"] * (1 - self.p) >= state["normal_max_inv"])
            hit = hit or self._spike(state, score, upward_floor)
        if hit:
            state["buffer_left"] = self.error_buffer - 1
        elif state["buffer_left"] > 0:
            state["buffer_left"] -= 1
            hit = True  # telemanom's error buffer: the steps after a hit belong to it
        threshold = None if state["eps"] is None else float(state["eps"])
        if threshold is not None and view is not None:
            threshold = max(threshold, view.eps)  # what the score was held to
        state["streak"] = state["streak"] + 1 if hit else 0
        learn = (
            not self.protect
            or not hit
            or (self.relearn_after > 0 and state["streak"] > self.relearn_after)
        )
        if self.in_window and math.isfinite(es):
            state.setdefault("exc", [])  # a state saved before `in_window` existed
            state.setdefault("exc_learned", 0)
            if state["exc"] and outside and not hit:
                state["exc"], state["exc_learned"] = [], 0
            elif state["exc"] or hit:
                state["exc"] = _pushed(state["exc"], es, self.window)
                state["exc_learned"] += int(learn)
        if learn and math.isfinite(es):
            self._learn_raw(state, score)
            state["buf"] = _pushed(state["buf"], es, self.window)
            state["since"] += 1
            if len(state["buf"]) >= 2 * self.batch and (
                state["eps"] is None or state["since"] >= self.batch
            ):
                self._refresh(state)
        if hit:
            return state, Decision("anomalous", threshold)
        return state, Decision("normal" if ready else "not_ready", threshold)
