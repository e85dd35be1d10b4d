"""Turn training series into a checkpoint: scale, window, split, fit, calibrate.

The recipe is the seed's: statistics from the training data only, sliding windows, 20 % of
the windows held out for validation, and the model's own training scores kept as its
calibration. Which windows are held out is the ``split``:

- ``"chronological"``: the last 20 % of each series' windows, as Keras' ``validation_split``
  takes the end of the arrays it is given. Early stopping then watches data after all the
  training data, but the model never trains on the end of the series, the part nearest
  to whatever it will score next.
- ``"shuffled"``: telemanom's. Its ``shape_data`` shuffles the training windows before
  Keras' ``validation_split`` takes the last 20 % of them, so the held-out windows are a
  random fifth, interleaved with (and overlapping) the trained ones, and the model trains
  on every part of the series, its end included. Drawn with the fit seed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from stream_detector.data.smap_msl import load_series
from stream_detector.data.windows import sliding_windows
from stream_detector.models import (
    Detector,
    FitConfig,
    build_detector,
    resolve_device,
    seed_everything,
)
from stream_detector.training.checkpoint import Calibration, Checkpoint
from stream_detector.training.scaler import StandardScaler

__all__ = [
    "SPLITS",
    "Split",
    "calibrate",
    "split_windows",
    "train_on_dataset",
    "train_on_series",
]

log = structlog.get_logger(__name__)


Split = Literal["chronological", "shuffled"]
SPLITS: tuple[Split, ...] = ("chronological", "shuffled")


def trained_windows(windows: int, val_fraction: float) -> int:
    """How many of a series' `windows` train (the rest validate): ``int(n * (1 - val_fraction))``,
    as Keras splits."""
    return int(windows * (1 - val_fraction))


def split_windows(
    series: Sequence[np.ndarray],
    window: int,
    stride: int,
    val_fraction: float,
    split: Split = "chronological",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation windows (N, window, D) cut from each series on its own.

    No window spans two series. Each series keeps ``int(n * (1 - val_fraction))`` of its n
    windows for training, as Keras does: its first ones (``"chronological"``) or a random
    draw of them (``"shuffled"``, seeded by ``seed``). Either way both parts stay in time
    order. Validation windows share up to ``window - 1`` steps with training windows, as
    they did in the seed (and in telemanom, far more so when shuffled).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for windows in (sliding_windows(s, window, stride) for s in series):
        n_train = trained_windows(len(windows), val_fraction)
        if split == "chronological":
            train_parts.append(windows[:n_train])
            val_parts.append(windows[n_train:])
            continue
        trained = np.zeros(len(windows), dtype=bool)
        trained[rng.permutation(len(windows))[:n_train]] = True
        train_parts.append(windows[trained])
        val_parts.append(windows[~trained])
    return np.concatenate(train_parts), np.concatenate(val_parts)


def check_series(series: Sequence[np.ndarray], channels: Sequence[str], window: int) -> int:
    """The series' common feature count; ValueError naming the series that is unusable."""
    if not series:
        raise ValueError("no training series given")
    names = (
        list(channels) if len(channels) == len(series) else [f"#{i}" for i in range(len(series))]
    )
    widths = {s.shape[-1] if s.ndim == 2 else -1 for s in series}
    for name, s in zip(names, series, strict=True):
        if s.ndim != 2:
            raise ValueError(f"series {name} has shape {s.shape}, expected (T, D)")
        if len(s) < window:
            raise ValueError(f"series {name} has {len(s)} steps, fewer than one window of {window}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"series {name} holds NaN or infinite values")
    if len(widths) != 1:
        by_width = {name: s.shape[-1] for name, s in zip(names, series, strict=True)}
        raise ValueError(f"series differ in feature count: {by_width}")
    return widths.pop()


# Scores kept in stream order for thresholds that start from a window of recent scores:
# telemanom's window of 30 batches of 70.
PRIOR_TAIL = 2100

Scaling = Literal["standard", "none"]
SCALINGS: tuple[Scaling, ...] = ("standard", "none")


def _fit_scaler(data: np.ndarray, scaling: Scaling) -> StandardScaler:
    if scaling == "standard":
        return StandardScaler.fit(data)
    if scaling == "none":
        width = data.shape[-1]
        return StandardScaler(np.zeros(width), np.ones(width))
    raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")


def calibrate(
    detector: Detector, train: np.ndarray, val: np.ndarray, last_series: np.ndarray
) -> Calibration:
    """The trained detector's scores on its training and validation windows, and its tail.

    The tail is the scores at stride 1 of the end of ``last_series`` (scaled), in stream order.
    """
    scores = np.concatenate([detector.score_in_batches(train), detector.score_in_batches(val)])
    last = last_series[-(PRIOR_TAIL + detector.window - 1) :]
    return Calibration.from_scores(
        scores, tail=detector.score_in_batches(sliding_windows(last, detector.window, 1))
    )


def train_on_series(
    kind: str,
    train_series: Sequence[np.ndarray],
    *,
    window: int,
    channels: Sequence[str],
    dataset: str,
    stride: int = 1,
    hyperparameters: dict[str, Any] | None = None,
    fit_config: FitConfig | None = None,
    val_fraction: float = 0.2,
    progress: bool = True,
    train_stride: int | None = None,
    scaling: Scaling = "standard",
    split: Split = "chronological",
) -> Checkpoint:
    """Train a ``kind`` detector on raw (T, D) series and return its checkpoint.

    ``stride`` is recorded for the daemon (steps between scored windows); ``train_stride``
    (default: ``stride``) spaces the training windows, to trade data for speed.
    The calibration holds the trained model's scores on all training windows, training
    and validation parts alike. ``scaling="none"`` keeps the raw values (an identity
    scaler): telemanom trains on SMAP/MSL as published, already in (-1, 1) with 0/1
    command flags, and standardising a flag seen twice in training turns it into a
    50-σ input when it appears in a test split. ``split`` says which windows validate (see
    the module's docstring); a shuffled split is drawn with the fit seed.
    """
    config = fit_config or FitConfig()
    train_stride = stride if train_stride is None else train_stride
    n_features = check_series(train_series, channels, window)

    scaler = _fit_scaler(np.concatenate(train_series), scaling)
    scaled = [scaler.transform(s) for s in train_series]
    train, val = split_windows(scaled, window, train_stride, val_fraction, split, config.seed)
    if len(train) == 0:
        raise ValueError(
            f"no training windows: {len(train) + len(val)} windows in all, "
            f"val_fraction {val_fraction}"
        )

    seed_everything(config.seed)
    detector = build_detector(kind, window, n_features, **(hyperparameters or {}))
    detector.to(resolve_device(config.device))
    log.info(
        "training_started",
        kind=kind,
        dataset=dataset,
        n_channels=len(channels),
        window=window,
        n_features=n_features,
        train_windows=len(train),
        val_windows=len(val),
        device=str(detector.device),
        hyperparameters=detector.hyperparameters,
    )
    history = detector.fit(train, val, config, progress=progress)

    calibration = calibrate(detector, train, val, scaled[-1])
    checkpoint = Checkpoint(
        detector=detector,
        scaler=scaler,
        calibration=calibration,
        window=window,
        stride=stride,
        n_features=n_features,
        channels=list(channels),
        dataset=dataset,
        fit={
            "history": history.to_dict(),
            "config": config.to_dict(),
            "val_fraction": val_fraction,
            "split": split,
            "train_stride": train_stride,
            "scaling": scaling,
            "train_windows": len(train),
            "val_windows": len(val),
        },
        created_at=time.time(),
    )
    log.info(
        "training_finished",
        kind=kind,
        model_version=checkpoint.model_version,
        epochs=history.epochs,
        best_epoch=history.best_epoch,
        stopped_early=history.stopped_early,
        best_val_loss=min(history.val_loss) if history.val_loss else None,
        seconds=round(history.seconds, 2),
        calibration_p99=calibration.quantiles["p99"],
    )
    return checkpoint


def train_on_dataset(
    root: str | Path,
    channels: Sequence[str],
    kind: str,
    *,
    window: int,
    dataset: str = "smap_msl",
    stride: int = 1,
    hyperparameters: dict[str, Any] | None = None,
    fit_config: FitConfig | None = None,
    val_fraction: float = 0.2,
    progress: bool = True,
    train_stride: int | None = None,
    scaling: Scaling = "standard",
    split: Split = "chronological",
) -> Checkpoint:
    """``train_on_series`` on the train split of ``channels`` of the SMAP/MSL data set at ``root``.

    The channels must share a feature count (SMAP has 25, MSL 55): mix one spacecraft only.
    """
    if not channels:
        raise ValueError("no channels given")
    series = [load_series(root, channel, "train") for channel in channels]
    log.info(
        "dataset_loaded",
        root=str(root),
        n_channels=len(channels),
        rows=sum(len(s) for s in series),
    )
    return train_on_series(
        kind,
        series,
        window=window,
        channels=channels,
        dataset=dataset,
        stride=stride,
        hyperparameters=hyperparameters,
        fit_config=fit_config,
        val_fraction=val_fraction,
        progress=progress,
        train_stride=train_stride,
        scaling=scaling,
        split=split,
    )
