"""Seeded, sine-like multichannel telemetry with known anomalies, for tests and demos without data.

Each channel is a noisy periodic value in column 0 (random period, amplitude, phase and
offset) plus optional slow covariates in columns 1..F-1. The train split is anomaly-free; the
test split continues the same signal in time and carries injected anomalies whose inclusive
index ranges (test coordinates, like ``labeled_anomalies.csv``) are returned as the truth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from producers.replay import DEFAULT_PERIOD_S, ChannelSeries, ReplayReport, stream_series
from producers.sender import StepSender

AnomalyKind = Literal["spike", "level_shift", "frequency_change", "noise_burst", "flatline"]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = (
    "spike",
    "level_shift",
    "frequency_change",
    "noise_burst",
    "flatline",
)
Split = Literal["train", "test"]

# Relative to a channel's amplitude: noise small enough that every injected anomaly stands
# far outside it, which is what makes these streams useful as a test oracle.
_NOISE_FRACTION = 0.02
# Anomalies stay out of the first fifth of the test split: window models need history first.
_WARMUP_FRACTION = 0.2
_MIN_SEGMENT = 64


@dataclass(frozen=True)
class SyntheticChannel:
    """One generated channel: clean train, test with anomalies, and where they are."""

    name: str
    train: np.ndarray  # (T_train, F) float32, anomaly-free
    test: np.ndarray  # (T_test, F) float32, anomalies injected into column 0
    anomalies: list[tuple[int, int]]  # inclusive [start, end] row ranges in `test`
    kinds: list[AnomalyKind]  # one per entry of `anomalies`
    clean_test: np.ndarray  # `test` as it was before the anomalies were injected

    def split(self, split: Split) -> np.ndarray:
        if split == "train":
            return self.train
        if split == "test":
            return self.test
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


@dataclass(frozen=True)
class _Wave:
    """The parameters of one channel's value signal."""

    omega: float  # radians per step
    amplitude: float
    phase: float
    harmonic_phase: float
    offset: float

    def at(self, t: np.ndarray, omega: float | None = None) -> np.ndarray:
        w = self.omega if omega is None else omega
        # A weak second harmonic keeps the shape sine-like without being a pure sine.
        return (
            self.offset
            + self.amplitude * np.sin(w * t + self.phase)
            + 0.3 * self.amplitude * np.sin(2 * w * t + self.harmonic_phase)
        )


def make_synthetic_channels(
    n_channels: int = 4,
    length: int = 2000,
    n_features: int = 1,
    seed: int = 0,
    anomalies_per_channel: int = 2,
    train_length: int | None = None,
    kinds: Sequence[AnomalyKind] = ANOMALY_KINDS,
) -> list[SyntheticChannel]:
    """Generate `n_channels` channels: `length` test steps, `train_length` (default: same) train.

    Deterministic in `seed`; channel ``i`` depends only on ``(seed, i)``, so asking for more
    channels does not change the first ones. Anomaly kinds are taken from `kinds` in turn.
    """
    if n_channels < 0:
        raise ValueError(f"n_channels must not be negative, got {n_channels}")
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1, got {n_features}")
    if anomalies_per_channel < 0:
        raise ValueError(f"anomalies_per_channel must not be negative, got {anomalies_per_channel}")
    if not kinds:
        raise ValueError("kinds must name at least one anomaly kind")
    for kind in kinds:
        if kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}; known: {', '.join(ANOMALY_KINDS)}")
    train_length = length if train_length is None else train_length
    usable = length - int(length * _WARMUP_FRACTION)
    if anomalies_per_channel and usable // anomalies_per_channel < _MIN_SEGMENT:
        need = int(np.ceil(_MIN_SEGMENT * anomalies_per_channel / (1 - _WARMUP_FRACTION)))
        raise ValueError(
            f"length {length} is too short for {anomalies_per_channel} anomalies per channel; "
            f"use at least {need}"
        )
    channels = []
    for index in range(n_channels):
        rng = np.random.default_rng([seed, index])
        first_kind = index * anomalies_per_channel
        channel_kinds = [kinds[(first_kind + j) % len(kinds)] for j in range(anomalies_per_channel)]
        channels.append(
            _make_channel(
                f"synth-{index:03d}", rng, train_length, length, n_features, channel_kinds
            )
        )
    return channels


def _make_channel(
    name: str,
    rng: np.random.Generator,
    train_length: int,
    test_length: int,
    n_features: int,
    kinds: list[AnomalyKind],
) -> SyntheticChannel:
    period = rng.uniform(40.0, 160.0)
    wave = _Wave(
        omega=2 * np.pi / period,
        amplitude=rng.uniform(0.3, 0.6),
        phase=rng.uniform(0, 2 * np.pi),
        harmonic_phase=rng.uniform(0, 2 * np.pi),
        offset=rng.uniform(-0.2, 0.2),
    )
    noise_sd = _NOISE_FRACTION * wave.amplitude
    # One timeline for both splits, so the test split continues the train split seamlessly.
    t = np.arange(train_length + test_length, dtype=np.float64)
    data = np.empty((t.size, n_features), dtype=np.float64)
    data[:, 0] = wave.at(t) + rng.normal(0.0, noise_sd, t.size)
    for column in range(1, n_features):
        slow_period = rng.uniform(1000.0, 5000.0)
        data[:, column] = rng.uniform(0.1, 0.3) * np.sin(
            2 * np.pi * t / slow_period + rng.uniform(0, 2 * np.pi)
        ) + rng.normal(0.0, 0.005, t.size)

    train = data[:train_length].astype(np.float32)
    clean_test = data[train_length:].astype(np.float32)
    test = clean_test.copy()
    value = data[train_length:, 0].copy()
    test_t = t[train_length:]
    anomalies = _place(rng, test_length, kinds, period)
    for (start, end), kind in zip(anomalies, kinds, strict=True):
        _inject(kind, value, test_t, start, end, wave, noise_sd, rng)
        test[start : end + 1, 0] = value[start : end + 1]
    return SyntheticChannel(
        name=name,
        train=train,
        test=test,
        anomalies=anomalies,
        kinds=list(kinds),
        clean_test=clean_test,
    )


def _place(
    rng: np.random.Generator, test_length: int, kinds: list[AnomalyKind], period: float
) -> list[tuple[int, int]]:
    """Non-overlapping ranges, one per equal segment of the test split after the warm-up."""
    count = len(kinds)
    if count == 0:
        return []
    warmup = int(test_length * _WARMUP_FRACTION)
    segment = (test_length - warmup) // count
    gap = segment // 8
    ranges = []
    for j, kind in enumerate(kinds):
        if kind == "spike":
            duration = int(rng.integers(1, 4))
        else:
            # Half a period or more, so a flatline or a frequency change visibly departs
            # from the wave; at most half a segment, so normal data separates anomalies.
            duration = int(np.clip(rng.uniform(0.5, 1.5) * period, 10, segment // 2))
        lo = warmup + j * segment + gap
        hi = warmup + (j + 1) * segment - gap - duration
        start = int(rng.integers(lo, max(lo + 1, hi)))
        ranges.append((start, start + duration - 1))
    return ranges


def _inject(
    kind: AnomalyKind,
    value: np.ndarray,
    t: np.ndarray,
    start: int,
    end: int,
    wave: _Wave,
    noise_sd: float,
    rng: np.random.Generator,
) -> None:
    """Overwrite `value[start:end+1]` in place with an anomaly of `kind`."""
    span = slice(start, end + 1)
    sign = rng.choice([-1.0, 1.0])
    if kind == "spike":
        value[span] += sign * rng.uniform(4.0, 6.0) * wave.amplitude
    elif kind == "level_shift":
        value[span] += sign * rng.uniform(1.0, 1.5) * wave.amplitude
    elif kind == "frequency_change":
        faster = wave.omega * rng.uniform(3.0, 5.0)
        value[span] = wave.at(t[span], omega=faster) + rng.normal(0.0, noise_sd, end - start + 1)
    elif kind == "noise_burst":
        value[span] += rng.normal(0.0, 0.5 * wave.amplitude, end - start + 1)
    elif kind == "flatline":
        # A stuck sensor repeats its last good reading, with no noise at all.
        value[span] = value[start - 1] if start > 0 else value[start]
    else:  # pragma: no cover - make_synthetic_channels validates kinds
        raise ValueError(f"unknown anomaly kind {kind!r}")


def send_synthetic(
    sender: StepSender,
    channels: Sequence[SyntheticChannel],
    split: Split = "test",
    steps_per_record: int = 1,
    speed: float | None = None,
    period_s: float = DEFAULT_PERIOD_S,
    start_ts: float | None = None,
    limit_steps: int | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Stream one split of generated channels exactly as `producers.replay.replay` streams files."""
    series = [ChannelSeries(c.name, c.split(split)[:limit_steps]) for c in channels]
    return stream_series(
        sender,
        series,
        steps_per_record=steps_per_record,
        speed=speed,
        period_s=period_s,
        start_ts=start_ts,
        progress=progress,
    )


def anomaly_truth(channels: Sequence[SyntheticChannel]) -> list[dict[str, Any]]:
    """The anomalies as rows shaped like ``labeled_anomalies.csv`` (ends inclusive), plus kinds."""
    return [
        {
            "chan_id": c.name,
            "anomaly_sequences": [list(r) for r in c.anomalies],
            "kinds": list(c.kinds),
            "num_values": int(c.test.shape[0]),
        }
        for c in channels
    ]


def write_truth(channels: Sequence[SyntheticChannel], path: Path | str) -> None:
    """Write `anomaly_truth` as JSON."""
    Path(path).write_text(json.dumps(anomaly_truth(channels), indent=2) + "\n")


def write_dataset(channels: Sequence[SyntheticChannel], root: Path | str) -> None:
    """Save the channels in the SMAP/MSL layout (``train/<chan>.npy``, ``test/<chan>.npy``).

    The truth goes beside them as ``anomalies.json``, so `producers.replay.replay` and the
    trainers can use generated data exactly like the real data set.
    """
    root = Path(root)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for c in channels:
        np.save(root / "train" / f"{c.name}.npy", c.train)
        np.save(root / "test" / f"{c.name}.npy", c.test)
    write_truth(channels, root / "anomalies.json")
