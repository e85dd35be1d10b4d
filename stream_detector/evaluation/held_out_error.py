"""The predictor's own yardstick: each cached model's mean raw score on its channel's held-out
part (for a predictor, its mean one-step error there), two score caches side by side.

It reads no labels and no injected anomaly, so it can say which of two recipes predicts the
unseen end of the train split better when the race's proxy (injected anomalies under one
threshold) cannot tell them apart. It is meaningful for caches made with `evaluate --fit-part
before-held-out`, whose models never trained on that part; it chooses nothing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_detector.data.smap_msl import channels_by_spacecraft

VALIDATION_KEY = "validation"
RESAMPLES = 1000


@dataclass(frozen=True)
class HeldOutComparison:
    spacecraft: str
    channels: tuple[str, ...]
    first: np.ndarray  # mean held-out score per channel, first cache
    second: np.ndarray
    first_lower_share: float  # share of paired draws of the channels where first's mean is lower
    resamples: int

    @property
    def first_lower_channels(self) -> int:
        return int(np.sum(self.first < self.second))


def held_out_means(cache: Path) -> dict[str, float]:
    """Channel → mean of the cached held-out (`validation`) scores, for each channel that has
    them (a channel whose held-out part is not longer than a window has none)."""
    means: dict[str, float] = {}
    for npz in sorted(Path(cache).glob("*.npz")):
        with np.load(npz) as data:
            if VALIDATION_KEY in data.files and data[VALIDATION_KEY].size:
                means[npz.stem] = float(np.mean(data[VALIDATION_KEY], dtype=np.float64))
    return means


def compare_held_out(
    first: Path, second: Path, root: Path, seed: int = 0, resamples: int = RESAMPLES
) -> list[HeldOutComparison]:
    """Per spacecraft, the channels both caches scored, with a paired bootstrap of the
    channels: how often `first`'s mean held-out score is below `second`'s."""
    a, b = held_out_means(first), held_out_means(second)
    comparisons = []
    for spacecraft, chans in channels_by_spacecraft(root, set(a) & set(b)).items():
        x = np.array([a[c] for c in chans])
        y = np.array([b[c] for c in chans])
        drawn = np.random.default_rng(seed).integers(0, len(chans), size=(resamples, len(chans)))
        share = float(np.mean(x[drawn].mean(axis=1) < y[drawn].mean(axis=1)))
        comparisons.append(HeldOutComparison(spacecraft, chans, x, y, share, resamples))
    if not comparisons:
        raise ValueError(f"{first} and {second} share no channel with held-out scores")
    return comparisons


def held_out_table(comparisons: list[HeldOutComparison], names: tuple[str, str]) -> str:
    """Markdown: one row per spacecraft."""
    lines = [
        f"| data | channels | {names[0]}: mean held-out error | {names[1]} | "
        f"{names[0]} lower on | {names[0]}'s mean lower in |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.spacecraft} | {len(c.channels)} | {c.first.mean():.4f} | "
            f"{c.second.mean():.4f} | {c.first_lower_channels} channels | "
            f"{c.first_lower_share:.1%} of {c.resamples:,} draws |"
        )
    return "\n".join(lines) + "\n"
