"""The README's demo, as a user runs it: the CLI against real Kafka and Redis and real SMAP data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "smap_msl"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"SMAP/MSL data not found at {DATA}")
def test_demo_alerts_on_the_labelled_anomaly_of_a_smap_channel(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")}
    env |= {
        "SD_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SD_REDIS__URL": redis_url,
        "SD_DATA__ROOT": str(DATA),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_detector.cli",
            "demo",
            "--quick",
            "--channel",
            "A-1",
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "RESULT: the labelled anomaly was alerted" in out
    summary = re.search(
        r"Episodes: (\d+); overlapping a labelled range: (\d+); more than \d+ steps from every "
        r"label: (\d+)",
        out,
    )
    assert summary, out
    _episodes, overlapping, far = map(int, summary.groups())
    assert overlapping >= 1
    assert far <= 3, f"too many alerts far from the labelled anomaly:\n{out}"
    assert "daemon stopped with SIGTERM, exit code 0" in out
