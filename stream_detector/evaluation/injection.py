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
    count: int | None = None,
    kind: str | None = None,
    sign: float | None = None,
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

    With ``count``, only that many of the slots (drawn at random) get an anomaly, the others
    stay normal; with ``kind`` every anomaly is of that kind, and with ``sign`` (+1 or -1)
    every one goes that way. Without these, the draws are exactly as they were before they
    existed.
    """
    series = np.array(values, dtype=np.float32, copy=True)
    t = len(series)
    col = series[:, column].astype(np.float64)
    if spread is None:
        value_range = float(col.max() - col.min()) if t else 0.0
        spread = max(float(col.std()), 0.05 * value_range, 1e-3)
    if spread <= 0:
        return Injected(series, [], [])
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if sign is not None and sign not in (1.0, -1.0):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")  # 0 would inject nothing
    rng = np.random.default_rng(seed)
    slots = max((t - lead - margin) // (length + margin), 0)
    if count is None and kind is None and sign is None:
        # The kinds start at a random one: with fewer slots than kinds, a fixed start would
        # give every short stretch a spike and no contextual anomaly at all.
        first = int(rng.integers(len(KINDS)))
        placed = list(enumerate(KINDS[(first + i) % len(KINDS)] for i in rng.permutation(slots)))
    else:
        chosen = np.arange(slots)
        if count is not None:
            chosen = np.sort(rng.choice(slots, size=min(count, slots), replace=False))
        first = int(rng.integers(len(KINDS)))
        placed = [
            (int(slot), kind or KINDS[(first + i) % len(KINDS)]) for i, slot in enumerate(chosen)
        ]
    kinds = [k for _, k in placed]
    sequences: list[tuple[int, int]] = []
    for slot, what in placed:
        start = lead + margin + slot * (length + margin)
        end = start + length - 1
        drawn = 1.0 if rng.random() < 0.5 else -1.0
        direction = drawn if sign is None else float(sign)
        if what == "spike":
            at = start + length // 2
            series[at : at + 3, column] += np.float32(direction * 2 * magnitude * spread)
            sequences.append((at, at + 2))
            continue
        if what == "level_shift":
            series[start : end + 1, column] += np.float32(direction * magnitude * spread)
        elif what == "noise_burst":
            noise = rng.normal(0.0, magnitude / 2 * spread, length).astype(np.float32)
            series[start : end + 1, column] += noise
        else:  # flatline: hold the value while the signal would have moved
            series[start : end + 1, column] = series[start, column]
            if np.ptp(col[start : end + 1]) < 0.5 * spread:
                # Nothing moved here anyway: a frozen sensor reads a wrong constant too.
                series[start : end + 1, column] += np.float32(direction * magnitude * spread)
        sequences.append((start, end))
    return Injected(series, sequences, kinds)
