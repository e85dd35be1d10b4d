"""Synthetic anomalies in presumed-normal data: labels for choosing a threshold without test labels.

A threshold (and its episode rules) has to be chosen on something. The test labels are
off limits, and the train split has none. So the last part of each channel's train split
(held out from training, presumed normal) gets a few anomalies of known place and kind
injected into the telemetry column, and every candidate is judged on finding them there and
on staying quiet elsewhere. The kinds mirror SMAP/MSL's labelled classes: point anomalies
(a short spike) and contextual ones (a level shift, a frozen value, a burst of noise).
Sizes are in units of the column's own spread in the train split, so a flat channel and a
noisy one get anomalies of the same difficulty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("spike", "level_shift", "flatline", "noise_burst")


@dataclass(frozen=True)
class Injected:
    values: np.ndarray  # (T, F), a copy with the anomalies in `column`
    sequences: list[tuple[int, int]]  # inclusive index ranges, in order
    kinds: list[str]


def inject_anomalies(
    values: np.ndarray,
    *,
    column: int = 0,
    spread: float | None = None,
    seed: int = 0,
    margin: int = 60,
    length: int = 40,
    magnitude: float = 4.0,
    lead: int = 0,
) -> Injected:
    """Place one anomaly of each kind per ``4 × (length + margin)`` steps, in random order
    (a stretch with room for fewer than four gets consecutive kinds from a random first one).

    ``spread`` is the column's scale (default: its std in ``values``, at least 0.05 of its
    range or 1e-3); spikes rise ``2 × magnitude`` spreads for 3 steps, level shifts move
    ``magnitude`` spreads, noise bursts add ``magnitude / 2`` spreads of Gaussian noise, and a
    flatline holds the last value while the signal would move. Anomalies keep ``margin``
    normal steps between them and from both ends; the first ``lead`` steps stay untouched
    (context for a detector to warm up on). A ``spread`` of 0 (a column constant where it was
    measured) gets no anomaly: every kind would be a change of size 0, a label on nothing.
    """
    series = np.array(values, dtype=np.float32, copy=True)
    t = len(series)
    col = series[:, column].astype(np.float64)
    if spread is None:
        value_range = float(col.max() - col.min()) if t else 0.0
        spread = max(float(col.std()), 0.05 * value_range, 1e-3)
    if spread <= 0:
        return Injected(series, [], [])
    rng = np.random.default_rng(seed)
    slots = max((t - lead - margin) // (length + margin), 0)
    # The kinds start at a random one: with fewer slots than kinds, a fixed start would
    # give every short stretch a spike and no contextual anomaly at all.
    first = int(rng.integers(len(KINDS)))
    kinds = [KINDS[(first + i) % len(KINDS)] for i in rng.permutation(slots)]
    sequences: list[tuple[int, int]] = []
    for slot, kind in enumerate(kinds):
        start = lead + margin + slot * (length + margin)
        end = start + length - 1
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            at = start + length // 2
            series[at : at + 3, column] += np.float32(sign * 2 * magnitude * spread)
            sequences.append((at, at + 2))
            continue
        if kind == "level_shift":
            series[start : end + 1, column] += np.float32(sign * magnitude * spread)
        elif kind == "noise_burst":
            noise = rng.normal(0.0, magnitude / 2 * spread, length).astype(np.float32)
            series[start : end + 1, column] += noise
        else:  # flatline: hold the value while the signal would have moved
            series[start : end + 1, column] = series[start, column]
            if np.ptp(col[start : end + 1]) < 0.5 * spread:
                # Nothing moved here anyway: a frozen sensor reads a wrong constant too.
                series[start : end + 1, column] += np.float32(sign * magnitude * spread)
        sequences.append((start, end))
    return Injected(series, sequences, kinds)
