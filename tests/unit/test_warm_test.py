"""The test split warmed on the cross-fitted train: the history's order, the count of the
test part alone, and the cold protocol as the grid's own test run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_detector.evaluation import warm_test as wt

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


def test_the_history_is_the_train_split_in_time_order(d11_cache):
    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.crossfit_replay import (
        cache_recipe,
        channel_folds,
        fold_folder,
        fold_recipe,
        train_history,
    )
    from stream_detector.evaluation.threshold_grid import ScoreCache
    from stream_detector.settings import Settings

    recipe = fold_recipe(cache_recipe(d11_cache))
    folds = channel_folds(
        DATA, "D-11", recipe, ScoreCache(fold_folder(d11_cache), recipe), Settings()
    )
    made = train_history(folds)
    assert made is not None
    values, scores, breaks = made
    train = load_series(DATA, "D-11", "train")
    assert np.array_equal(values, train)  # first half, then second: the split as it came
    # Fold 1 was trained on the second half and scores the first: its scores come first.
    assert np.array_equal(scores[: len(folds[1].scores)], folds[1].scores)
    assert breaks == [len(folds[1].scored)]
    assert train_history(folds[:1]) is None


def test_cold_is_the_grids_test_run_and_warmed_counts_the_test_part_alone(d11_cache):
    from stream_detector.app import build_engine
    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.metrics import count_channel
    from stream_detector.evaluation.threshold_grid import run_engine
    from stream_detector.serving import ServedModel
    from stream_detector.settings import Settings
    from stream_detector.training.checkpoint import load_checkpoint

    result = wt.warm_test(DATA, "smap", d11_cache, ["D-11"])
    assert result.cold_only == []
    assert [r.chan_id for r in result.rows] == ["D-11"]
    # Cold: the test split streamed alone, as `evaluate --thresholds` streams it.
    test = load_series(DATA, "D-11", "test")
    model = ServedModel(load_checkpoint(d11_cache / "D-11.pt", device="cpu"))
    test_scores = np.load(d11_cache / "D-11.npz")["test"]
    cold_run = run_engine(Settings(), model, "D-11", test, test_scores)
    cold = cold_run.episodes()
    row = result.rows[0]
    assert result.counts["cold"][0] == count_channel(
        "D-11", row.anomaly_sequences, cold, row.num_values
    )

    # Warmed by hand: the halves on one state (fold 1's scores of the first, a skipped step,
    # fold 0's of the second); the test split from a new state holding its threshold state.
    s0 = np.load(d11_cache / "crossfit" / "D-11.fold0.npz")["other_half"]
    s1 = np.load(d11_cache / "crossfit" / "D-11.fold1.npz")["other_half"]
    train = load_series(DATA, "D-11", "train")
    half = (len(train) + 1) // 2
    history = run_engine(
        Settings(), model, "D-11", train, np.concatenate([s1, s0]), breaks=(half,)
    ).state
    assert history is not None
    fresh = build_engine(Settings(), model).new_state("D-11", -1)
    fresh.threshold = history.threshold
    warmed_run = run_engine(Settings(), model, "D-11", test, test_scores, state=fresh)
    warmed = warmed_run.episodes()
    assert result.counts["warmed"][0] == count_channel(
        "D-11", row.anomaly_sequences, warmed, row.num_values
    )

    # Scaled: the same, the history's scores times the model's scale (what `prime` writes).
    from stream_detector.evaluation.crossfit_replay import channel_folds, fold_store
    from stream_detector.priming import history_scale

    recipe, store = fold_store(d11_cache)
    folds = channel_folds(DATA, "D-11", recipe, store, Settings())
    factor = history_scale(Settings(), model, "D-11", train, folds).factor
    assert result.factors == {"D-11": pytest.approx(factor)} and result.unscaled == {}
    rescaled = run_engine(
        Settings(), model, "D-11", train, np.concatenate([s1, s0]) * factor, breaks=(half,)
    ).state
    assert rescaled is not None
    fresh = build_engine(Settings(), model).new_state("D-11", -1)
    fresh.threshold = rescaled.threshold
    scaled = run_engine(Settings(), model, "D-11", test, test_scores, state=fresh).episodes()
    assert result.counts["scaled"][0] == count_channel(
        "D-11", row.anomaly_sequences, scaled, row.num_values
    )

    # The error scale of the test stream's start against the history's, as the report gives it.
    ratio = np.median(test_scores[: wt.SCALE_SCORES]) / np.median(np.concatenate([s1, s0]))
    assert result.scale == {"SMAP": [pytest.approx(float(ratio))]}

    scaled_ratio = np.median(test_scores[: wt.SCALE_SCORES]) / np.median(
        np.concatenate([s1, s0]) * factor
    )
    assert result.scaled_scale == {"SMAP": [pytest.approx(float(scaled_ratio), rel=1e-5)]}

    # Where the primed ε starts against where the cold stream sets it (the first scores a
    # warm-up leaves unjudged have no threshold).
    def judged(run, n):
        return np.median([t for t in run.thresholds[:n] if t is not None])

    settled = judged(cold_run, wt.SCALE_SCORES)
    assert cold_run.thresholds[0] is None and warmed_run.thresholds[0] is not None
    start = judged(warmed_run, wt.PRIMED_START) / settled
    assert result.threshold_start["warmed"] == {"SMAP": [pytest.approx(float(start))]}
    assert set(result.threshold_start) == {"warmed", "scaled"}

    text = wt.report(result)
    assert "| SMAP | cold |" in text and "| SMAP | warmed |" in text
    assert "| SMAP | scaled |" in text
    assert f"SMAP: warmed, the threshold over the first {wt.PRIMED_START} test scores" in text
    assert f"over the history's, median per channel {ratio:.2f}" in text
    assert f"at the model's scale, median per channel {scaled_ratio:.2f}" in text
    assert (
        "factor (the model's scores over fold 0's on the rows neither fitted), "
        f"median per channel {factor:.2f}" in text
    )


def test_the_command_plots_each_protocol_of_a_channel_it_is_asked_for(d11_cache, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    base = ["--cache", str(d11_cache), "--dataset", "smap", "--channel", "D-11"]
    base += ["--data-root", str(DATA)]
    no_out = CliRunner().invoke(wt.main, [*base, "--plot", "D-11"])
    assert no_out.exit_code != 0 and "--plot draws into --out" in no_out.output
    unknown = CliRunner().invoke(wt.main, [*base, "--out", str(tmp_path), "--plot", "A-1"])
    assert unknown.exit_code != 0 and "A-1: not among the channels streamed" in unknown.output

    made = CliRunner().invoke(wt.main, [*base, "--out", str(tmp_path), "--plot", "D-11"])
    assert made.exit_code == 0, made.output
    png = tmp_path / "warm-D-11.png"
    assert str(png) in made.output and (tmp_path / "warm-test.md").is_file()
    with Image.open(png) as image:
        assert image.size == (1200, 880)


def test_a_zero_median_leaves_the_channel_out_of_the_ratio_lines():
    """A predictor exact on constant telemetry has a median error of 0: its ratio is NaN,
    not a crash, and the line counts only the channels it can be read on."""
    assert np.isnan(wt._ratio(0.3, 0.0))
    assert wt._ratio(0.3, 0.6) == pytest.approx(0.5)
    assert wt._spread([wt._ratio(0.3, 0.0), 2.0]).endswith("1 channels")
    assert wt._spread([wt._ratio(0.3, 0.0)]) == ""
