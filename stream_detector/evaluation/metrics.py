"""Event-level and point-level metrics for predicted anomalous sequences.

Sequences are ``(start, end)`` pairs of test-row indices with ``end`` inclusive, the
coordinates of ``labeled_anomalies.csv``.

telemanom's event rule (a labelled sequence is found when any predicted sequence overlaps
it; a predicted sequence that overlaps no label is a false positive) is the field's
convention, but it gives a perfect score to a detector that flags every point. So every
result carries, beside it, the fraction of points flagged and the composite F1 of Garg et
al. (2021): the harmonic mean of event-wise recall and *point-wise* precision. That is the
number to rank by. Point-adjusted F1 is reported too, labelled as inflated: it credits a
whole labelled segment for one flagged point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

Span = tuple[int, int]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, overlapping or touching spans merged into one."""
    out: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        if end < start:
            raise ValueError(f"span ({start}, {end}) ends before it starts")
        if out and start <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def spans_from_flags(flags: np.ndarray) -> list[Span]:
    """Runs of True in a boolean point array, as inclusive spans."""
    flags = np.asarray(flags, dtype=bool)
    if not flags.any():
        return []
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def flags_from_spans(spans: Iterable[Span], n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    for start, end in spans:
        flags[max(start, 0) : min(end, n - 1) + 1] = True
    return flags


def overlaps(a: Span, b: Span) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


@dataclass
class ChannelCounts:
    """Everything needed to aggregate a channel's result into a data-set result."""

    channel: str
    n_points: int
    labelled: list[Span]
    predicted: list[Span]
    tp: int  # labelled sequences found
    fn: int  # labelled sequences missed
    fp: int  # predicted sequences overlapping no label
    flagged_points: int
    true_flagged_points: int  # flagged points inside a label
    labelled_points: int
    adjusted_tp_points: int  # point-adjusted: whole found segments count
    delays: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_channel(
    channel: str, labelled: Sequence[Span], predicted: Sequence[Span], n_points: int
) -> ChannelCounts:
    """Compare one channel's predicted sequences with its labelled ones."""
    labels = merge_spans(labelled)
    preds = merge_spans((max(s, 0), min(e, n_points - 1)) for s, e in predicted if e >= 0)
    found = [any(overlaps(lab, p) for p in preds) for lab in labels]
    fp = sum(not any(overlaps(p, lab) for lab in labels) for p in preds)
    flags = flags_from_spans(preds, n_points)
    truth = flags_from_spans(labels, n_points)
    delays = []
    for lab, hit in zip(labels, found, strict=True):
        if hit:
            inside = np.flatnonzero(flags[lab[0] : lab[1] + 1])
            # A prediction that began before the label and runs into it counts as on time.
            delays.append(int(inside[0]) if len(inside) else 0)
    # Point adjustment: every point of a found segment counts as detected.
    adjusted_tp = sum(e - s + 1 for (s, e), hit in zip(labels, found, strict=True) if hit)
    return ChannelCounts(
        channel=channel,
        n_points=n_points,
        labelled=labels,
        predicted=preds,
        tp=sum(found),
        fn=len(labels) - sum(found),
        fp=fp,
        flagged_points=int(flags.sum()),
        true_flagged_points=int((flags & truth).sum()),
        labelled_points=int(truth.sum()),
        adjusted_tp_points=adjusted_tp,
        delays=delays,
    )


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f_beta(p: float, r: float, beta: float) -> float:
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r) if (p + r) > 0 else 0.0


@dataclass(frozen=True)
class EventMetrics:
    """A data set's (or a channel's) result; every headline number side by side."""

    channels: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    f05: float
    flagged_fraction: float
    point_precision: float
    composite_f1: float
    point_adjusted_f1: float  # inflated: a whole segment counts for one flagged point
    mean_delay: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(counts: Sequence[ChannelCounts]) -> EventMetrics:
    """Sum counts over channels (telemanom's aggregation) and derive the metrics."""
    tp = sum(c.tp for c in counts)
    fp = sum(c.fp for c in counts)
    fn = sum(c.fn for c in counts)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    flagged = sum(c.flagged_points for c in counts)
    points = sum(c.n_points for c in counts)
    point_precision = _ratio(sum(c.true_flagged_points for c in counts), flagged)
    adjusted_tp = sum(c.adjusted_tp_points for c in counts)
    adjusted_flagged = flagged + adjusted_tp - sum(c.true_flagged_points for c in counts)
    adjusted_p = _ratio(adjusted_tp, adjusted_flagged)
    adjusted_r = _ratio(adjusted_tp, sum(c.labelled_points for c in counts))
    delays = [d for c in counts for d in c.delays]
    return EventMetrics(
        channels=len(counts),
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=_f_beta(precision, recall, 1.0),
        f05=_f_beta(precision, recall, 0.5),
        flagged_fraction=_ratio(flagged, points),
        point_precision=point_precision,
        composite_f1=_f_beta(point_precision, recall, 1.0),
        point_adjusted_f1=_f_beta(adjusted_p, adjusted_r, 1.0),
        mean_delay=float(np.mean(delays)) if delays else None,
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank (Mann-Whitney U) formula, ties averaged."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties so equal scores count half.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Average precision (area under the precision-recall step curve)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    hits = labels[order].astype(np.float64)
    cum_tp = np.cumsum(hits)
    # Evaluate only at the last index of each group of tied scores.
    last = np.concatenate([np.flatnonzero(np.diff(sorted_scores)), [len(scores) - 1]])
    tp = cum_tp[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    prev_recall = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - prev_recall) * precision))
