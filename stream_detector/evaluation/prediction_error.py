"""telemanom's own yardstick of a predictor, on the test split, beside telemanom's published run.

Every row of telemanom's results files carries ``normalized_pred_error``: the mean one-step
prediction error of its model over the test split, divided by the range of the test values
(``np.mean(e) / np.ptp(y_test)``, ``run.py`` of the 2018-05-19 run). A score cache of our
`lstm_dt` (scoring its first prediction of the telemetry value, as telemanom scored) gives
the same number for our model, channel by channel. Side by side they say whether a gap in
the threshold race is in the model (our errors larger than telemanom's) or after it.

It reads no label, but it reads the test split: a diagnostic that chooses nothing.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_detector.data.smap_msl import channels_by_spacecraft, load_series
from stream_detector.evaluation.threshold_grid import read_cache_entry

__all__ = [
    "ErrorComparison",
    "cache_normalized_errors",
    "compare_with_run",
    "normalized_error",
    "prediction_error_table",
    "published_normalized_errors",
]

TEST_KEY = "test"
# The column of telemanom's results files that holds it, by the code's age.
COLUMNS = ("normalized_pred_error", "normalized_error")


def normalized_error(errors: np.ndarray, test_values: np.ndarray) -> float:
    """Mean error over the range of the test values the errors are for (the last ones: a
    window's error belongs to its newest step); NaN for a channel whose values never move."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        raise ValueError("no errors to average")
    values = np.asarray(test_values, dtype=np.float64).ravel()
    if values.size < errors.size:
        raise ValueError(f"{errors.size} errors but only {values.size} test values")
    spread = float(np.ptp(values[values.size - errors.size :]))
    return float(errors.mean()) / spread if spread > 0 else math.nan


def _check_comparable(chan: str, kind: str, hyperparameters: dict[str, object]) -> None:
    first = hyperparameters.get("scored_prediction", "first") == "first" or (
        hyperparameters.get("n_predictions", 1) == 1
    )
    if kind != "lstm_dt" or not first or hyperparameters.get("score_features") != [0]:
        what = kind if kind != "lstm_dt" else f"lstm_dt with {hyperparameters}"
        raise ValueError(
            f"{chan}: telemanom's yardstick needs an lstm_dt cache scoring its first prediction "
            f"of column 0, this one is {what}"
        )


def cache_normalized_errors(cache: Path, root: Path) -> dict[str, float]:
    """Channel → normalised test error of a score cache's model (`evaluate --score-cache`),
    in the raw units of the telemetry (a standardised checkpoint's errors are scaled back)."""
    errors: dict[str, float] = {}
    for npz in sorted(Path(cache).glob("*.npz")):
        chan = npz.stem
        entry = read_cache_entry(Path(cache), chan)
        if entry is None:
            raise FileNotFoundError(
                f"{chan}: {npz.with_suffix('.pt')} is missing (the cache's checkpoint)"
            )
        checkpoint, arrays = entry
        if TEST_KEY not in arrays:
            continue  # no test scores, or stale ones of another scorer
        scores = arrays[TEST_KEY]
        _check_comparable(chan, checkpoint.detector.kind, checkpoint.detector.hyperparameters)
        raw_errors = np.asarray(scores, dtype=np.float64) * float(checkpoint.scaler.std[0])
        test = load_series(root, chan, "test")
        errors[chan] = normalized_error(raw_errors, test[:, 0])
    if not errors:
        raise ValueError(f"{cache} holds no cached test scores")
    return errors


def published_normalized_errors(run: Path) -> dict[str, float]:
    """Channel → normalised test error of a telemanom results file: its
    ``normalized_pred_error`` column (the 2018 code) or ``normalized_error`` (the refactored
    code of 2019 on; the same quantity). A channel with two rows (P-2, one per label row)
    keeps its first: telemanom predicted it once per row."""
    if not run.is_file():
        raise FileNotFoundError(f"telemanom results file not found at {run}")
    published: dict[str, float] = {}
    with run.open(newline="") as handle:
        reader = csv.DictReader(handle)
        column = next(
            (c for c in COLUMNS if c in (reader.fieldnames or [])),
            None,
        )
        if column is None:
            raise ValueError(f"{run} has no {' or '.join(COLUMNS)} column")
        for row in reader:
            published.setdefault(row["chan_id"], float(row[column]))
    return published


@dataclass(frozen=True)
class ErrorComparison:
    spacecraft: str
    channels: tuple[str, ...]
    ours: np.ndarray  # normalised test error per channel
    theirs: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        return self.ours / self.theirs

    @property
    def geometric_mean_ratio(self) -> float:
        """exp(mean log(ours / theirs)): 1.5 means our errors are half as large again, on a
        typical channel; a few outlying channels move it less than the ratio of the means."""
        return float(np.exp(np.mean(np.log(self.ratio))))

    @property
    def lower_channels(self) -> int:
        return int(np.sum(self.ours < self.theirs))


def compare_with_run(
    ours: dict[str, float], theirs: dict[str, float], root: Path
) -> list[ErrorComparison]:
    """Per spacecraft (SMAP first), the channels both have a finite, positive error for."""
    comparisons = []
    # Every channel of ours must be a labelled one, even where the run has no number for it.
    for spacecraft, group in channels_by_spacecraft(root, ours).items():
        chans = tuple(
            chan
            for chan in group
            if chan in theirs
            and all(math.isfinite(x) and x > 0 for x in (ours[chan], theirs[chan]))
        )
        if chans:
            comparisons.append(
                ErrorComparison(
                    spacecraft,
                    chans,
                    np.array([ours[c] for c in chans]),
                    np.array([theirs[c] for c in chans]),
                )
            )
    if not comparisons:
        raise ValueError("the cache and the run share no channel with a positive error")
    return comparisons


def prediction_error_table(
    comparisons: list[ErrorComparison], run_name: str, per_channel: bool = False
) -> str:
    """Markdown: one row per spacecraft; with ``per_channel``, then every channel, the
    largest ratio first."""
    lines = [
        f"| data | channels | ours: mean normalised test error | {run_name} | "
        "geometric mean of ours / theirs | ours lower on |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.spacecraft} | {len(c.channels)} | {c.ours.mean():.4f} | "
            f"{c.theirs.mean():.4f} | {c.geometric_mean_ratio:.2f} | "
            f"{c.lower_channels} channels |"
        )
    if per_channel:
        lines += [
            "",
            "| channel | data | ours | theirs | ours / theirs |",
            "|---|---|---:|---:|---:|",
        ]
        rows = [
            (chan, c.spacecraft, ours, theirs)
            for c in comparisons
            for chan, ours, theirs in zip(c.channels, c.ours, c.theirs, strict=True)
        ]
        for chan, spacecraft, ours, theirs in sorted(rows, key=lambda r: -r[2] / r[3]):
            lines.append(
                f"| {chan} | {spacecraft} | {ours:.4f} | {theirs:.4f} | {ours / theirs:.2f} |"
            )
    return "\n".join(lines) + "\n"
