"""`stream-detector evaluate` on two SMAP channels, as CI can afford."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "smap_msl"

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not DATA.is_dir(), reason=f"SMAP/MSL data not found at {DATA}")
def test_evaluate_writes_metrics_beside_telemanom_and_plots(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")}
    env["SD_DATA__ROOT"] = str(DATA)
    out = tmp_path / "eval"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_detector.cli",
            "evaluate",
            "--model",
            "lstm_ae",
            "--dataset",
            "smap",
            "--channel",
            "A-1",
            "--channel",
            "P-2",
            "--window",
            "50",
            "--epochs",
            "10",
            "--patience",
            "3",
            "--train-stride",
            "2",
            "--hp",
            "hidden1=32",
            "--hp",
            "hidden2=16",
            "--hp",
            "latent=8",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "| lstm_ae | SMAP | 3 |" in summary  # P-2 has two label rows
    assert "| telemanom (published run) | SMAP | 3 |" in summary
    rows = list(csv.DictReader((out / "channels.csv").open()))
    assert [r["chan_id"] for r in rows] == ["A-1", "P-2", "P-2"]
    assert all(r["roc_auc"] for r in rows)
    assert {p.name for p in (out / "plots").iterdir()} == {"A-1.png", "P-2.png"}
