"""telemanom's yardstick of a predictor: normalised test error of a cache beside a published run."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_detector.cli import main
from stream_detector.data.smap_msl import load_series
from stream_detector.evaluation.prediction_error import (
    cache_normalized_errors,
    compare_with_run,
    normalized_error,
    published_normalized_errors,
)
from stream_detector.training.checkpoint import load_checkpoint

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smap_msl"

HEADER = "run_id,chan_id,normalized_pred_error,spacecraft\n"


def test_the_error_is_averaged_over_the_range_of_the_values_it_belongs_to():
    # Three errors belong to the last three values (0, 4, 2): range 4, mean error 2.
    assert normalized_error(np.array([1.0, 2.0, 3.0]), np.array([9.0, 0.0, 4.0, 2.0])) == 0.5
    assert np.isnan(normalized_error(np.array([1.0]), np.array([5.0, 5.0])))
    with pytest.raises(ValueError, match="3 errors but only 2 test values"):
        normalized_error(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="no errors"):
        normalized_error(np.array([]), np.ones(2))


def test_a_channel_with_two_rows_keeps_its_first(tmp_path):
    run = tmp_path / "run.csv"
    run.write_text(HEADER + "r,P-2,0.5,SMAP\nr,P-2,0.7,SMAP\nr,M-1,0.25,MSL\n")
    assert published_normalized_errors(run) == {"P-2": 0.5, "M-1": 0.25}
    # The refactored code of 2019 names the column normalized_error.
    (tmp_path / "2019.csv").write_text("chan_id,normalized_error\nT-1,0.125\n")
    assert published_normalized_errors(tmp_path / "2019.csv") == {"T-1": 0.125}
    (tmp_path / "bad.csv").write_text("run_id,chan_id\nr,P-2\n")
    with pytest.raises(ValueError, match="no normalized_pred_error or normalized_error column"):
        published_normalized_errors(tmp_path / "bad.csv")


@pytest.mark.skipif(not DATA.is_dir(), reason="SMAP/MSL data not found")
def test_each_data_set_is_compared_on_the_channels_both_have():
    ours = {"A-1": 0.2, "A-2": 0.05, "M-1": 0.1, "M-2": float("nan")}
    theirs = {"A-1": 0.1, "A-2": 0.1, "M-1": 0.1, "M-2": 0.1, "T-1": 0.3}
    smap, msl = compare_with_run(ours, theirs, DATA)
    assert (smap.spacecraft, smap.channels, msl.spacecraft, msl.channels) == (
        "SMAP",
        ("A-1", "A-2"),
        "MSL",
        ("M-1",),  # M-2's error is not a number (its values never move): left out
    )
    # Ratios 2 and 0.5: the geometric mean is 1, one channel lower.
    assert smap.geometric_mean_ratio == pytest.approx(1.0)
    assert smap.lower_channels == 1 and msl.lower_channels == 0
    with pytest.raises(ValueError, match="not in the label file: Z-9"):
        compare_with_run({"Z-9": 0.1}, theirs, DATA)


@pytest.fixture()
def d11_lstm_dt_cache(d11_cache_of):
    """A score cache of D-11 by a tiny lstm_dt (one epoch), standardised, so its errors are
    in scaled units and the yardstick must scale them back."""
    from stream_detector.evaluation.runner import ModelRecipe
    from stream_detector.models.base import FitConfig

    return d11_cache_of(
        ModelRecipe(
            kind="lstm_dt",
            window=20,
            hyperparameters={"score_features": [0], "hidden": [8]},
            fit=FitConfig(epochs=1, device="cpu"),
            train_stride=16,
        )
    )


def test_a_cache_is_measured_in_the_telemetry_s_own_units(d11_lstm_dt_cache, tmp_path):
    errors = cache_normalized_errors(d11_lstm_dt_cache, DATA)
    assert list(errors) == ["D-11"]
    checkpoint = load_checkpoint(d11_lstm_dt_cache / "D-11.pt", device="cpu")
    std = float(checkpoint.scaler.std[0])
    assert std != pytest.approx(1.0)  # standardised: the scale-back is exercised
    scores = np.load(d11_lstm_dt_cache / "D-11.npz")["test"].astype(np.float64)
    values = load_series(DATA, "D-11", "test")[:, 0].astype(np.float64)
    # One error per test step from the first full window on.
    assert scores.size == values.size - checkpoint.window + 1
    expected = scores.mean() * std / np.ptp(values[checkpoint.window - 1 :])
    assert errors["D-11"] == pytest.approx(expected, rel=1e-6)

    run = tmp_path / "run.csv"
    run.write_text(HEADER + f"r,D-11,{expected / 2},SMAP\nr,A-1,0.1,SMAP\n")
    out = CliRunner().invoke(
        main,
        [
            "prediction-error",
            str(d11_lstm_dt_cache),
            "--run",
            str(run),
            "--channels",
            "--data-root",
            str(DATA),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "| SMAP | 1 |" in out.output and "| 2.00 | 0 channels |" in out.output
    assert "| D-11 | SMAP |" in out.output and out.output.rstrip().endswith("| 2.00 |")


def test_a_cache_of_another_model_is_refused_by_name(d11_cache):
    out = CliRunner().invoke(main, ["prediction-error", str(d11_cache), "--data-root", str(DATA)])
    assert out.exit_code != 0
    assert "needs an lstm_dt cache scoring its first prediction of column 0" in out.output
    assert "dense_ae" in out.output
