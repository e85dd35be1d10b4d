"""One picture per channel: the signal, the score against the threshold, labels and alerts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from stream_detector.evaluation.runner import ChannelOutcome


def save_figure(fig: Figure, path: Path, dpi: int) -> Path:
    """Lay out, write (making the folder) and close a figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_channel(outcome: ChannelOutcome, test: np.ndarray, path: Path) -> Path:
    """Telemetry value (top) and score vs threshold (bottom); labels red, predictions blue."""
    run = outcome.run
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 5), sharex=True, gridspec_kw={"height_ratios": [1, 1]}
    )
    top.plot(np.arange(len(test)), test[:, 0], lw=0.6, color="0.2")
    top.set_ylabel("value (column 0)")
    seqs = np.asarray(run.end_seqs)
    scores = np.asarray(run.scores, dtype=float)
    thresholds = np.asarray([np.nan if t is None else t for t in run.thresholds], dtype=float)
    bottom.plot(seqs, scores, lw=0.6, color="0.2", label="score")
    bottom.plot(seqs, thresholds, lw=0.8, color="tab:orange", label="threshold")
    if np.all(scores[np.isfinite(scores)] > 0):
        bottom.set_yscale("log")
    bottom.set_ylabel("window score")
    bottom.set_xlabel("test row (sequence number)")
    for ax in (top, bottom):
        for start, end in outcome.counts.labelled:
            ax.axvspan(start, end, color="tab:red", alpha=0.2, lw=0)
        for start, end in outcome.counts.predicted:
            ax.axvspan(start, end + 1, color="tab:blue", alpha=0.35, lw=0)
    c = outcome.counts
    top.set_title(
        f"{c.channel}: labelled (red) vs alerted (blue) — TP {c.tp}, FP {c.fp}, FN {c.fn}"
    )
    bottom.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path, dpi=110)
