"""Static thresholds chosen on *labelled* scores, offline only (the seeds' calibrations).

- `f1_optimal_threshold`: the threshold that maximises point-wise F1 of ``score > t``;
- `fpr_target_threshold`: the lowest threshold that flags at most a fraction ``fpr`` of the
  normal points.

Both read labels, so a daemon can only use their result as a ``fixed`` threshold chosen on
other data than it is judged on. In `evaluate --thresholds` they run as *oracle* variants,
fitted on each channel's own test labels: an upper bound for any static threshold on that
model's scores, never a result.
"""

from __future__ import annotations

import numpy as np


def _checked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape or s.size == 0:
        raise ValueError(f"need as many labels as scores (got {s.size} scores, {y.size} labels)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, y


def f1_optimal_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(t, F1) with t a midpoint between distinct scores that maximises F1 of ``score > t``.

    Ties go to the higher threshold (fewer alarms). With no positive label nothing can be
    found: ValueError.
    """
    s, y = _checked(scores, labels)
    if not y.any():
        raise ValueError("no anomalous point among the labels: F1 is undefined")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Cut after position i flags the i+1 highest scores; only cuts between distinct values.
    tp = np.cumsum(y_sorted)
    flagged = np.arange(1, s.size + 1)
    cuts = np.flatnonzero(np.append(s_sorted[1:] < s_sorted[:-1], True))
    f1 = 2 * tp[cuts] / (flagged[cuts] + y.sum())
    best = int(cuts[np.argmax(f1)])  # argmax takes the first: the highest threshold
    below = s_sorted[best + 1] if best + 1 < s.size else s_sorted[best] - 1.0
    return float((s_sorted[best] + below) / 2), float(f1.max())


def fpr_target_threshold(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The lowest threshold t (a normal point's score) with mean(normal > t) <= fpr."""
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr must lie in [0, 1), got {fpr}")
    s, y = _checked(scores, labels)
    normal = np.sort(s[~y])
    if normal.size == 0:
        raise ValueError("no normal point among the labels")
    allowed = int(np.floor(fpr * normal.size))  # normal points that may lie above t
    return float(normal[normal.size - 1 - allowed])
