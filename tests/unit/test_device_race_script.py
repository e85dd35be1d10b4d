"""deploy/device/race.sh, run here on the CPU at the smallest size: one channel, one epoch,
one process of each kind. What it packs must be what the race reads back."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_detector.evaluation import replay_counts
from stream_detector.evaluation.threshold_grid import load_results

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "smap_msl"


@pytest.mark.skipif(not DATA.is_dir(), reason="needs the SMAP/MSL data")
def test_the_device_script_packs_a_race_and_its_fold_counts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "OUT": str(out),
        "RACE_NAME": "one-channel",
        "CACHE_ROOT": str(tmp_path / "cache"),
        "WHEELS": "none",
        "PYTHON": sys.executable,
        "SD_DATA__ROOT": str(DATA),
        "JOBS": "1",
        "FOLD_JOBS": "1",
        "RACE_DATASET": "smap",
        "FOLD_DATASET": "smap",
        "RACE_FLAGS": "--channel D-11 --epochs 1",
        # Uncapped fold models (the cache's recipe is one epoch anyway), so that the warm
        # late key runs on them too.
        "FOLD_FLAGS": "--channel D-11",
        "RACE_GRID": "docs/threshold-default.json",
    }
    run = subprocess.run(
        [str(REPO / "deploy" / "device" / "race.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trainings done (status 0)" in run.stdout
    with tarfile.open(out / "race.tar.xz") as packed:
        packed.extractall(tmp_path / "back", filter="data")
    back = tmp_path / "back"
    results = load_results(back / "race")
    assert len(results) == 1
    assert (back / "counts" / "crossfit-shard-0.json").is_file()
    assert "| SMAP | 1 |" in (back / "prediction-error.md").read_text()
    # Nothing of the models comes back; they stay in the cache.
    assert not list(back.rglob("*.pt")) and list((tmp_path / "cache").rglob("*.pt"))
    grid = str(REPO / "docs" / "threshold-default.json")
    counts = [str(back / "counts" / "crossfit-shard-0.json")]
    judged = CliRunner().invoke(
        replay_counts.main, [*counts, "--thresholds", grid, "--against", str(back / "race")]
    )
    assert judged.exit_code == 0, judged.output
    assert "| SMAP |" in judged.output and "transfer to the test streams" in judged.output
    # The warm late key's record and report come back; its shares stay behind.
    assert "late key done (status 0)" in run.stdout
    late = (back / "late-key.md").read_text()
    assert "rule v7 (docs/threshold-race.md, thirty-fifth look" in late
    assert "| SMAP | 1 |" in late  # one variant ranked: the checks cannot pass, but they ran
    assert (back / "late" / "warm.json.gz").is_file() and not list((back / "late").rglob("*.pkl"))
