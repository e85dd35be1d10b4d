"""The predictor's yardstick: mean held-out scores of two caches, compared per data set."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_detector.cli import main
from stream_detector.evaluation.held_out_error import compare_held_out, held_out_means

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smap_msl"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="SMAP/MSL data not found")


def _cache(folder: Path, scores: dict[str, dict[str, list[float]]]) -> Path:
    folder.mkdir()
    for chan, arrays in scores.items():
        np.savez(folder / f"{chan}.npz", **{k: np.array(v) for k, v in arrays.items()})
    return folder


def test_each_data_set_is_compared_on_the_channels_both_caches_scored(tmp_path):
    first = _cache(
        tmp_path / "first",
        {
            "A-1": {"validation": [1.0, 1.0], "test": [9.0]},
            "A-2": {"validation": [3.0]},
            "M-1": {"validation": [0.25, 0.75]},
            "M-2": {"test": [1.0]},  # no held-out part: not compared
            "T-1": {"validation": [0.0]},  # only in this cache: not compared
        },
    )
    second = _cache(
        tmp_path / "second",
        {"A-1": {"validation": [2.0]}, "A-2": {"validation": [2.0]}, "M-1": {"validation": [1.0]}},
    )
    assert held_out_means(first) == {"A-1": 1.0, "A-2": 3.0, "M-1": 0.5, "T-1": 0.0}

    smap, msl = compare_held_out(first, second, DATA)
    assert (smap.spacecraft, smap.channels, msl.spacecraft, msl.channels) == (
        "SMAP",
        ("A-1", "A-2"),
        "MSL",
        ("M-1",),
    )
    assert smap.first.tolist() == [1.0, 3.0] and smap.second.tolist() == [2.0, 2.0]
    assert smap.first_lower_channels == 1
    # Of two drawn channels only has first's mean lower (1 < 2); a mixed draw
    # ties (2 = 2) and is higher: a quarter of the draws.
    assert smap.first_lower_share == pytest.approx(0.25, abs=0.05)
    assert msl.first_lower_share == 1.0

    out = CliRunner().invoke(
        main,
        ["held-out-error", str(first), str(second), "--names", "new,old", "--data-root", str(DATA)],
    )
    assert out.exit_code == 0, out.output
    assert "| MSL | 1 | 0.5000 | 1.0000 | 1 channels | 100.0% of 1,000 draws |" in out.output


def test_caches_with_no_shared_held_out_channel_are_an_error(tmp_path):
    first = _cache(tmp_path / "first", {"A-1": {"validation": [1.0]}})
    second = _cache(tmp_path / "second", {"A-2": {"validation": [1.0]}})
    with pytest.raises(ValueError, match="share no channel"):
        compare_held_out(first, second, DATA)
