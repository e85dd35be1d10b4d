"""telemanom's published run (2018-05-19) as a row of every results table."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

from stream_detector.evaluation.metrics import ChannelCounts, count_channel

REFERENCE_FILE = Path("reference") / "telemanom-2018-05-19.csv"


def telemanom_reference(root: str | Path, spacecraft: str | None = None) -> list[ChannelCounts]:
    """Score telemanom's predicted sequences (tp ∪ fp) with our scorer, one row per label row."""
    path = Path(root) / REFERENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"telemanom reference run not found at {path}")
    counts = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if spacecraft is not None and row["spacecraft"] != spacecraft:
                continue
            # The file mixes JSON lists and Python tuple reprs; literal_eval reads both.
            predicted = [
                (int(s), int(e))
                for field in ("tp_sequences", "fp_sequences")
                for s, e in ast.literal_eval(row[field])
            ]
            labelled = [(int(s), int(e)) for s, e in ast.literal_eval(row["anomaly_sequences"])]
            n_points = int(row["num_test_values"]) + 260  # telemanom drops l_s + n_predictions
            counts.append(count_channel(row["chan_id"], labelled, predicted, n_points))
    return counts
