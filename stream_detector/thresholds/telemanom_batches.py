"""telemanom's error processing as its batch form ran it, streamed one batch late.

Hundman et al., KDD 2018 (``telemanom/errors.py`` of the run published on 2018-05-19).
`thresholds/telemanom.py` streams telemanom's dynamic threshold a score at a time, against
the ε of the last full batch, with its window protected from anomalies. telemanom itself
judged a batch of 70 errors at a time, against an ε computed on a window that already held
that batch, and learned every error. This strategy does that, causally: a batch is judged
when its last score arrives, from the errors up to it and no later one, so a decision comes
at most ``batch`` − 1 steps after the score it is about (docs/threshold-race.md, the
thirty-second look: on SMAP that form raised 5 false episodes where the per-score form
raised 20).

- **Smoothing.** An EWMA of span ``span`` with pandas' default (``adjust=True``) weights,
  as telemanom's ``get_errors`` had it, but without its flat start (which read ahead).
- **A batch's verdict.** When the ``batch``-th score since the last verdict arrives, the
  window is the last ``window`` smoothed errors, this batch the newest of them. ε = μ + zσ
  by `find_z` on the window, and on the window flipped around its mean (an unusually *low*
  error counts too); points above ε (and above ``min_value_ratio`` of the 5–95 % range of
  the window's telemetry values) are padded by ``error_buffer`` both ways, kept only inside
  this batch, cut into sequences and pruned: walking the sequences' peaks down to the
  largest error of the window neither flagged now nor by an earlier verdict, every sequence
  after the last drop of at least ``p`` goes. Nothing is flagged in a window whose largest
  error is under ``min_error``, or whose spread is under ``min_value_ratio`` of the values'.
  The batch is ``anomalous`` if any of its points is flagged. Earlier verdicts are read one
  batch off, as the 2018 code read them.
- **Spikes** (``spike_margin`` > 0; 0, off, is telemanom's form). A batch whose largest raw
  score exceeds (1 + ``spike_margin``) × the largest raw score of the window's earlier
  batches, and ``min_error``, is ``anomalous`` whatever ε says: the smoothing flattens a
  spike of a few steps below any ε (docs/threshold-race.md, thirty-sixth look). It is the
  per-score form's rule (`telemanom`'s ``spike_margin``), judged a batch at a time.
- **Between verdicts** a score is ``pending``: it is in the window, not yet judged.
- **Warm-up.** Nothing before the ``warmup``-th score is flagged (``not_ready``). telemanom
  chose 500, 250 or 0 from the series' total length, which a stream does not know. Windows
  shorter than about four error buffers flag nothing anyway: `find_z` takes no ε whose
  padded points would cover half the window.
- **Not protected.** Every error enters the window, anomalous or not, as in telemanom: an
  incident raises the ε that later batches meet, and pruning against earlier finds is what
  keeps it from hiding the next one. That is the form measured in the thirty-second look;
  `telemanom` is the protected, per-score form.

Pair it with the episode rules' ``lead`` = ``batch`` − 1, so that an episode starts at the
first point of the batch that opened it (a verdict arrives at a batch's last score), and a
``hold_down`` of more than ``batch``, so that flagged batches in a row are one episode.
The last batch of a stream that stops mid-batch is never judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from stream_detector.thresholds.base import (
    Decision,
    ScorePrior,
    ThresholdState,
    ThresholdStrategy,
    register_threshold,
)
from stream_detector.thresholds.telemanom import _dilate, _pushed, find_z


def runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted distinct indices longer than one point, ends inclusive."""
    found: list[tuple[int, int]] = []
    start = prev = None
    for i in indices:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None and prev is not None and prev > start:
            found.append((start, prev))
        start = prev = i
    if start is not None and prev is not None and prev > start:
        found.append((start, prev))
    return found


def prune_sequences(
    sequences: list[tuple[int, int]],
    e_s: np.ndarray,
    non_anom_max: float,
    points: list[int],
    p: float,
) -> list[int]:
    """telemanom's ``prune_anoms``: walking the sequences' peaks from the highest down (and
    the largest unflagged error after them), every sequence after the last drop of at least
    `p` is removed. Peaks are taken over [start, end), as in the 2018 code."""
    seq_max = [float(e_s[s:e].max()) for s, e in sequences]
    peaks = sorted(seq_max, reverse=True)
    if non_anom_max > 0:
        peaks.append(non_anom_max)
    remove: list[int] = []
    for i in range(len(peaks) - 1):
        if (peaks[i] - peaks[i + 1]) / peaks[i] < p:
            remove.append(seq_max.index(peaks[i]))
        else:
            remove = []
    kept = list(sequences)
    for index in sorted(remove, reverse=True):
        del kept[index]
    return [i for i in points if any(s <= i <= e for s, e in kept)]


def _candidates(
    e_s: np.ndarray,
    epsilon: float,
    inter_range: float,
    chan_std: float,
    std: float,
    allowed_from: int,
    before: np.ndarray,
    error_buffer: int,
    min_error: float,
    min_value_ratio: float,
) -> tuple[list[tuple[int, int]], list[int], float]:
    """telemanom's ``compare_to_epsilon`` on one window: the candidate sequences, their
    points, and the largest error neither flagged now nor `before`."""
    if (
        not (std > min_value_ratio * chan_std or e_s.max() > min_value_ratio * inter_range)
        or not e_s.max() > min_error
    ):
        return [], [], 0.0
    index = np.arange(len(e_s))
    hits = (e_s > epsilon) & (e_s > min_value_ratio * inter_range)
    points = _dilate(hits, error_buffer) & (index >= allowed_from)
    non_anom_max = float(e_s[~points & ~before].max(initial=0.0))
    ordered = [int(i) for i in np.flatnonzero(points)]
    return runs(ordered), ordered, non_anom_max


def window_anomalies(
    e_s: np.ndarray,
    values: np.ndarray,
    allowed_from: int,
    before: np.ndarray,
    error_buffer: int = 100,
    p: float = 0.13,
    min_error: float = 0.05,
    min_value_ratio: float = 0.05,
) -> tuple[list[int], float]:
    """telemanom's ``get_anomalies`` on one window of smoothed errors: the points from
    `allowed_from` on that its errors, or its errors flipped around their mean, flag (each
    pruned on its own), and the window's ε. `before[i]` says whether point i counts as
    flagged by an earlier window, for pruning."""
    high, low = np.percentile(values, [95, 5])
    inter_range = float(high - low)
    mean, std, chan_std = float(e_s.mean()), float(e_s.std()), float(values.std())
    inverted = mean + (mean - e_s)
    epsilon = mean + find_z(e_s, error_buffer) * std
    found: set[int] = set()
    for errors, eps in ((e_s, epsilon), (inverted, mean + find_z(inverted, error_buffer) * std)):
        sequences, points, non_anom_max = _candidates(
            errors,
            eps,
            inter_range,
            chan_std,
            std,
            allowed_from,
            before,
            error_buffer,
            min_error,
            min_value_ratio,
        )
        if sequences:
            points = prune_sequences(sequences, errors, non_anom_max, points, p)
        found.update(points)
    return sorted(found), epsilon


@register_threshold("telemanom_batches")
class TelemanomBatches(ThresholdStrategy):
    # Unprotected by design (telemanom's window takes every error): every key moves.
    volatile_keys: ClassVar[frozenset[str]] = frozenset(
        {"num", "den", "n", "errors", "values", "flagged", "eps", "raw_maxima", "raw_block"}
    )
    protected: ClassVar[bool] = False

    def __init__(
        self,
        span: int = 105,
        window: int = 2100,
        batch: int = 70,
        error_buffer: int = 100,
        p: float = 0.13,
        warmup: int = 140,
        min_error: float = 0.05,
        min_value_ratio: float = 0.05,
        spike_margin: float = 0.0,
    ) -> None:
        if span < 1 or batch < 1 or window < 2 * batch:
            raise ValueError("need span >= 1, batch >= 1 and window >= 2·batch")
        if error_buffer < 1 or not 0 <= p < 1 or warmup < 0:
            raise ValueError("need error_buffer >= 1, 0 <= p < 1 and warmup >= 0")
        if min_error < 0 or min_value_ratio < 0:
            raise ValueError("need min_error >= 0 and min_value_ratio >= 0")
        if spike_margin < 0:
            raise ValueError("need spike_margin >= 0 (0: off)")
        self.span = span
        self.window = window
        self.batch = batch
        self.error_buffer = error_buffer
        self.p = p
        self.warmup = warmup
        self.min_error = min_error
        self.min_value_ratio = min_value_ratio
        self.spike_margin = spike_margin

    @property
    def latency(self) -> int:
        """The most steps a verdict comes after the score it is about."""
        return self.batch - 1

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "span": self.span,
            "window": self.window,
            "batch": self.batch,
            "error_buffer": self.error_buffer,
            "p": self.p,
            "warmup": self.warmup,
            "min_error": self.min_error,
            "min_value_ratio": self.min_value_ratio,
            "spike_margin": self.spike_margin,
        }

    def initial_state(self, prior: ScorePrior | None) -> ThresholdState:
        # The window fills from the stream itself: telemanom judged test errors only.
        return {
            "num": 0.0,
            "den": 0.0,
            "n": 0,
            "errors": [],
            "values": [],
            "flagged": [],  # stream indices flagged by earlier verdicts still in reach
            "eps": None,
            "raw_maxima": [],  # the largest raw score of each earlier batch in the window
            "raw_block": None,  # the largest raw score of this batch so far
        }

    def step(
        self, state: ThresholdState, score: float, value: float | None = None
    ) -> tuple[ThresholdState, Decision]:
        state = dict(state)
        keep = 1.0 - 2.0 / (self.span + 1.0)
        if math.isfinite(score):
            state["num"] = score + keep * state["num"]
            state["den"] = 1.0 + keep * state["den"]
        # A score that is not a number says nothing: the smoothed error stays where it was,
        # and the stream's count of scores, which places the batches, still moves.
        es = state["num"] / state["den"] if state["den"] > 0 else 0.0
        # A missing value repeats the last one, so the values stay aligned with the errors.
        if value is None or not math.isfinite(value):
            value = state["values"][-1] if state["values"] else 0.0
        state["n"] += 1
        n = state["n"]
        state["errors"] = _pushed(state["errors"], float(es), self.window)
        state["values"] = _pushed(state["values"], float(value), self.window)
        if self.spike_margin > 0 and math.isfinite(score):
            block = state.get("raw_block")
            state["raw_block"] = float(score) if block is None else max(block, float(score))
        eps = state["eps"]
        if n % self.batch:
            return state, Decision("pending" if n > self.warmup else "not_ready", eps)
        spike = self._spike(state)
        if n <= self.warmup:
            return state, Decision("not_ready", eps)
        errors = np.asarray(state["errors"], dtype=np.float64)
        start = n - len(errors)  # the stream index of the window's first error
        # The 2018 code looked a window's point x up at x + (window − 1)·batch among the
        # earlier finds: one batch before where the window starts.
        before = np.zeros(len(errors), dtype=bool)
        for flagged in state["flagged"]:
            at = flagged - (start - self.batch)
            if 0 <= at < len(errors):
                before[at] = True
        found, eps = window_anomalies(
            errors,
            np.asarray(state["values"], dtype=np.float64),
            max(n - self.batch, self.warmup) - start,
            before,
            self.error_buffer,
            self.p,
            self.min_error,
            self.min_value_ratio,
        )
        reach = n - self.window - self.batch
        state["flagged"] = [i for i in state["flagged"] if i >= reach] + [start + j for j in found]
        state["eps"] = float(eps)
        return state, Decision("anomalous" if found or spike else "normal", float(eps))

    def _spike(self, state: ThresholdState) -> bool:
        """Whether this batch's largest raw score is a spike: above (1 + ``spike_margin``) ×
        the largest raw score of the window's earlier batches, and above ``min_error``. The
        smoothing flattens a few steps' spike below any ε; the per-score form's rule finds
        it. Moves the batch's maximum into the window's either way (a batch ends here)."""
        block = state.get("raw_block")
        earlier = list(state.get("raw_maxima", []))
        spike = (
            self.spike_margin > 0
            and block is not None
            and bool(earlier)
            and block > max((1 + self.spike_margin) * max(earlier), self.min_error)
        )
        if block is not None:
            state["raw_maxima"] = [*earlier, block][-max(self.window // self.batch - 1, 1) :]
        state["raw_block"] = None
        return bool(spike)
