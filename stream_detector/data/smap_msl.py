"""Loader for the NASA SMAP/MSL telemetry benchmark (telemanom layout) at a caller-given root.

Layout (see the dataset README): ``labeled_anomalies.csv`` plus ``train/<chan>.npy`` and
``test/<chan>.npy``, float32 arrays of shape (T, D); column 0 is the telemetry value and
the other columns are 0/1 command flags. Nothing here copies the data anywhere.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from stream_detector.data.windows import sliding_windows

__all__ = [
    "LABELS_FILE",
    "LabelRow",
    "Spacecraft",
    "Split",
    "channel_ids",
    "channels_by_spacecraft",
    "load_labels",
    "load_series",
    "sliding_windows",
]

LABELS_FILE = "labeled_anomalies.csv"
Split = Literal["train", "test"]
Spacecraft = Literal["SMAP", "MSL"]

_SPLITS: tuple[str, ...] = ("train", "test")
_SPACECRAFT: tuple[str, ...] = ("SMAP", "MSL")
# Channel ids become file names; refusing anything else keeps "../x" out of the path.
_CHANNEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class LabelRow:
    """One row of ``labeled_anomalies.csv``: the labelled anomalies of one test series."""

    chan_id: str
    spacecraft: str
    # Pairs of 0-based row indices into test/<chan_id>.npy; both ends inclusive.
    anomaly_sequences: list[tuple[int, int]]
    # One of "point" / "contextual" per sequence, in the same order.
    classes: list[str]
    # Length of the test series.
    num_values: int


def _existing_root(root: str | Path) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"SMAP/MSL dataset root not found: {path}")
    return path


def load_series(root: str | Path, chan_id: str, split: Split) -> np.ndarray:
    """The ``split`` series of channel ``chan_id`` as float32 of shape (T, D)."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    if not _CHANNEL_ID.match(chan_id):
        raise ValueError(f"not a channel id: {chan_id!r}")
    base = _existing_root(root)
    path = base / split / f"{chan_id}.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {split} series for channel {chan_id!r}: {path} does not exist "
            f"(dataset root {base})"
        )
    series = np.load(path, allow_pickle=False)
    if series.ndim != 2:
        raise ValueError(f"{path} holds shape {series.shape}, expected (T, D)")
    return series.astype(np.float32, copy=False)


def _parse_classes(text: str) -> list[str]:
    # The column reads like "[contextual, point]": a list without quotes, so not JSON.
    inner = text.strip().removeprefix("[").removesuffix("]")
    return [word.strip() for word in inner.split(",") if word.strip()]


def load_labels(root: str | Path) -> list[LabelRow]:
    """Every row of ``labeled_anomalies.csv``, in file order.

    Both rows of P-2 are kept (their intervals differ; the file has 82 rows for 81 channels).
    """
    base = _existing_root(root)
    path = base / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path} (dataset root {base})")
    rows: list[LabelRow] = []
    with path.open(newline="") as handle:
        for line_no, record in enumerate(csv.DictReader(handle), start=2):
            sequences = [
                (int(start), int(end)) for start, end in json.loads(record["anomaly_sequences"])
            ]
            classes = _parse_classes(record["class"])
            if len(classes) != len(sequences):
                raise ValueError(
                    f"{path}:{line_no}: {len(sequences)} anomaly sequences but "
                    f"{len(classes)} classes"
                )
            rows.append(
                LabelRow(
                    chan_id=record["chan_id"],
                    spacecraft=record["spacecraft"],
                    anomaly_sequences=sequences,
                    classes=classes,
                    num_values=int(record["num_values"]),
                )
            )
    return rows


def channels_by_spacecraft(root: str | Path, channels: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``channels`` grouped by the spacecraft the label file gives them, SMAP first, each
    group sorted; a channel the label file does not know is a ValueError."""
    craft = {row.chan_id: row.spacecraft for row in load_labels(root)}
    chans = sorted(set(channels))
    unknown = [chan for chan in chans if chan not in craft]
    if unknown:
        raise ValueError(f"channels not in the label file: {', '.join(unknown)}")
    return {
        spacecraft: tuple(c for c in chans if craft[c] == spacecraft)
        for spacecraft in sorted({craft[c] for c in chans}, reverse=True)
    }


def channel_ids(root: str | Path, spacecraft: Spacecraft | None = None) -> list[str]:
    """Distinct channel ids in label-file order, optionally of one spacecraft only.

    With ``spacecraft=None`` the list also holds channels that have a train file but no
    label row, appended in name order after the labelled ones: that is T-10 in the official
    release (55 columns like MSL, but unlabelled, so it belongs to neither spacecraft).
    """
    if spacecraft is not None and spacecraft not in _SPACECRAFT:
        raise ValueError(
            f"spacecraft must be one of {list(_SPACECRAFT)} or None, got {spacecraft!r}"
        )
    labelled = [
        row.chan_id
        for row in load_labels(root)
        if spacecraft is None or row.spacecraft == spacecraft
    ]
    ids = list(dict.fromkeys(labelled))
    if spacecraft is None:
        known = set(ids)
        unlabelled = sorted(
            p.stem for p in (Path(root) / "train").glob("*.npy") if p.stem not in known
        )
        ids.extend(unlabelled)
    return ids
