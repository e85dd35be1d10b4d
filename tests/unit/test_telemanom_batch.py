"""telemanom's 2018 batch processing, ported as a diagnostic: hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_detector.evaluation import telemanom_batch as tb
from stream_detector.thresholds.telemanom_batches import prune_sequences, runs


def test_smoothing_uses_pandas_adjusted_weights_and_a_flat_start():
    config = tb.BatchConfig(batch=3, window_size=1, smoothing_perc=1.0, l_s=1)  # span 3
    assert config.span == 3
    # span 3: α = 1/2. Adjusted: y_t = Σ (1/2)^i x_{t−i} / Σ (1/2)^i.
    smoothed = tb.smoothed_errors(np.array([1.0, 0.0, 0.0]), config, flatten_start=False)
    assert smoothed == pytest.approx([1.0, 0.5 / 1.5, 0.25 / 1.75])
    # The first l_s = 1 value becomes the mean of the first 2·l_s.
    flat = tb.smoothed_errors(np.array([1.0, 0.0, 0.0]), config)
    assert flat == pytest.approx([(1.0 + 1 / 3) / 2, 1 / 3, 1 / 7])


def test_runs_drop_single_points():
    assert runs([1, 2, 3, 5, 7, 8]) == [(1, 3), (7, 8)]
    assert runs([4]) == [] and runs([]) == []


def test_pruning_removes_what_follows_the_last_big_drop():
    e_s = np.zeros(40)
    e_s[0:5], e_s[10:15], e_s[20:25] = 1.0, 0.95, 0.5
    sequences = [(0, 5), (10, 15), (20, 25)]
    points = list(range(0, 6)) + list(range(10, 16)) + list(range(20, 26))
    # Peaks 1.0, 0.95, 0.5, then the largest unflagged error 0.45: 1.0 → 0.95 drops 5 %
    # (< p, marked), 0.95 → 0.5 drops 47 % (clears the marks), 0.5 → 0.45 drops 10 %
    # (< p: the 0.5 sequence goes).
    kept = prune_sequences(sequences, e_s, 0.45, points, p=0.13)
    assert kept == list(range(0, 6)) + list(range(10, 16))
    # Without an unflagged error close below it, the 0.5 sequence stays.
    assert prune_sequences(sequences, e_s, 0.1, points, p=0.13) == points


N = 3000
VALUES = np.sin(np.arange(N) / 20)  # 5–95 % range ≈ 1.98: 5 % of it ≈ 0.099


def _errors(seed: int = 0) -> np.ndarray:
    return 0.01 + np.abs(np.random.default_rng(seed).normal(0, 0.002, N))


def test_flat_small_errors_flag_nothing():
    # Every smoothed error is under telemanom's 0.05 floor.
    assert tb.batch_sequences(_errors(), VALUES) == []


def test_a_late_anomaly_is_flagged_a_batch_at_a_time():
    errors = _errors()
    errors[2600:2620] = 1.0
    # Window 8 (errors 560–2659) is the first to hold the bump; only its newest batch,
    # 2590–2659, may be flagged, so the error buffer cannot reach further back than 2590.
    # Window 9 (630–2729) checks its points against earlier finds one batch off (the 2018
    # code's x + (window − 1)·batch): the bump's peak, near 2619, is looked up at 2549,
    # counts as unflagged, and out-ranks the newest batch's decaying tail (2660–2729),
    # which pruning then removes; later windows likewise.
    assert tb.batch_sequences(errors, VALUES) == [(2590, 2659)]


def test_the_first_window_is_judged_in_hindsight_after_its_first_500_errors():
    errors = _errors()
    errors[1000:1020] = 1.0
    ((start, end),) = tb.batch_sequences(errors, VALUES)
    # Padded by the error buffer backwards too: the first window is judged whole.
    assert 1000 - 99 <= start < 1000 and end > 1019
    errors = _errors()
    errors[300:320] = 1.0
    # Its hits and their padding lie in the first 500 errors, which the first window ignores
    # (3,000 ≥ 2,500 errors), and no later window's newest batch reaches back there.
    assert tb.batch_sequences(errors, VALUES) == []


def test_unusually_small_errors_are_found_through_the_inverted_errors():
    errors = 0.3 + np.abs(np.random.default_rng(1).normal(0, 0.02, N))
    errors[2400:2700] = 0.0
    found = tb.batch_sequences(errors, VALUES)
    assert found and all(s <= 2700 and e >= 2400 for s, e in found)
    assert any(s <= 2450 for s, _ in found)


def test_a_series_shorter_than_a_window_is_one_window():
    errors = _errors()[:1500]
    errors[1000:1020] = 1.0
    ((start, end),) = tb.batch_sequences(errors, VALUES[:1500])
    assert start < 1000 and end > 1019
    with pytest.raises(ValueError, match="1500 errors but 1499 values"):
        tb.batch_sequences(errors, VALUES[:1499])


def test_no_errors_is_an_error():
    with pytest.raises(ValueError, match="no errors"):
        tb.batch_sequences(np.zeros(0), np.zeros(0))


def test_the_causal_form_matches_the_batch_form_once_windows_are_full():
    errors = _errors()
    errors[2600:2620] = 1.0
    # The windows that see the bump (from 560–2659 on) are the batch form's, and the flat
    # start only touched the first 250 smoothed errors, outside them.
    assert tb.causal_batch_sequences(errors, VALUES) == tb.batch_sequences(errors, VALUES)
    assert tb.causal_batch_sequences(errors, VALUES) == [(2590, 2659)]


def test_the_causal_form_cannot_pad_back_past_the_batch_it_judges():
    errors = _errors()
    errors[1000:1020] = 1.0
    ((batch_start, _),) = tb.batch_sequences(errors, VALUES)
    assert batch_start < 980  # judged in hindsight: padded back into earlier batches
    # One batch late: the bump first shows in the batch 980–1049 (window 0–1049), which is
    # where its episode starts; the batches before it were judged before it came.
    ((start, end),) = tb.causal_batch_sequences(errors, VALUES)
    assert start == 980 and end > 1019


def test_the_causal_form_warms_up_by_a_fixed_count_not_by_the_streams_length():
    errors = _errors()
    errors[400:420] = 1.0
    # The batch form ignores the first 500 errors of a 3,000-error series, in hindsight.
    assert tb.batch_sequences(errors, VALUES) == []
    # The causal form judges from error 140 on; the bump shows in the batch 350–419.
    assert tb.causal_batch_sequences(errors, VALUES) == [(350, 419)]
    assert tb.causal_batch_sequences(errors, VALUES, warmup=500) == []


def test_a_short_window_flags_nothing_since_the_buffer_would_cover_half_of_it():
    errors = _errors()
    errors[100:105] = 3.0
    # find_z takes no ε whose padded hits (±100) cover half of the window or more, so until
    # the window is long enough nothing is flagged, warm-up or not.
    assert tb.causal_batch_sequences(errors, VALUES, warmup=0) == []


def test_the_causal_form_reads_no_error_after_the_batch_it_judges():
    rng = np.random.default_rng(3)
    errors = _errors(3)
    for at in rng.integers(200, N - 50, 6):
        errors[at : at + 15] = rng.uniform(0.3, 1.0)
    full = tb.causal_flags(errors, VALUES)
    assert full.any()
    # Cut anywhere: what was flagged before the cut's last complete batch does not change.
    for cut in (700, 1555, 2100, 2345, 2990):
        head = tb.causal_flags(errors[:cut], VALUES[:cut])
        judged = cut - cut % 70
        assert np.array_equal(head[:judged], full[:judged]), cut


def test_the_streamed_strategy_decides_each_batch_as_the_causal_form_flags_it():
    from stream_detector.thresholds import build_threshold
    from stream_detector.thresholds.state_codec import pack_state, unpack_state

    errors = _errors(4)
    # The third bump is no higher than the second, still in its window: pruned. The fourth is.
    for at, length, height in (
        (450, 30, 0.66),
        (1200, 38, 0.98),
        (1900, 38, 0.72),
        (2600, 30, 3.0),
    ):
        errors[at : at + length] = height
    flags = tb.causal_flags(errors, VALUES)
    thr = build_threshold("telemanom_batches")
    state = thr.initial_state(None)
    verdicts: dict[int, bool] = {}
    for i, (error, value) in enumerate(zip(errors, VALUES, strict=True)):
        if i == 1500:  # a round trip through the store mid-stream changes nothing
            state = unpack_state(json.loads(json.dumps(pack_state(state))))
        state, decision = thr.step(state, float(error), float(value))
        end = i + 1
        if end % 70:
            assert decision.status == ("pending" if end > 140 else "not_ready")
        elif end <= 140:
            assert decision.status == "not_ready"
        else:
            verdicts[end] = decision.anomalous
    # 3,000 errors: the last 60 are a batch still open, which a stream has not judged yet.
    expected = {end: bool(flags[end - 70 : end].any()) for end in range(210, 2961, 70)}
    assert verdicts == expected
    assert [end for end, anomalous in expected.items() if anomalous] == [490, 1260, 2660]


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"SMAP/MSL data not found at {DATA}")
def test_both_processings_read_one_cache_and_the_streamed_one_is_the_grids_default(tmp_path):
    from click.testing import CliRunner

    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.metrics import count_channel
    from stream_detector.evaluation.runner import ModelRecipe
    from stream_detector.evaluation.threshold_grid import ThresholdVariant, run_grid
    from stream_detector.models.base import FitConfig
    from stream_detector.settings import Settings

    recipe = ModelRecipe(
        kind="dense_ae",
        window=30,
        hyperparameters={"score_features": [0], "hidden": [16, 8]},
        fit=FitConfig(epochs=2, device="cpu"),
        train_stride=4,
    )
    default = ThresholdVariant(
        "default", Settings().threshold.model_dump(), Settings().alerts.model_dump()
    )
    cache = tmp_path / "cache"
    grid = run_grid(DATA, "smap", recipe, Settings(), [default], ["D-11"], False, cache=cache)
    result = tb.run_batch(DATA, "smap", cache, ["D-11"])
    assert [r.chan_id for r in result.rows] == ["D-11"]
    assert result.streamed == grid["default"].counts  # the same engine on the same scores
    # The batch form's sequences sit on the rows the errors are of (29 rows of history).
    with np.load(cache / "D-11.npz") as data:
        scores = data["test"].astype(np.float64)
    test = load_series(DATA, "D-11", "test")
    assert len(test) - len(scores) == 29
    # telemanom's errors stop n_predictions (10) rows before the series does.
    errors = scores[:-10]
    found = [(s + 29, e + 29) for s, e in tb.batch_sequences(errors, test[29:-10, 0])]
    row = result.rows[0]
    assert result.batch == [count_channel("D-11", row.anomaly_sequences, found, row.num_values)]
    out = CliRunner().invoke(
        tb.main, ["--cache", str(cache), "--dataset", "smap", "--channel", "D-11",
                  "--data-root", str(DATA), "--causal"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    causal = [(s + 29, e + 29) for s, e in tb.causal_batch_sequences(errors, test[29:-10, 0])]
    assert tb.run_batch(DATA, "smap", cache, ["D-11"], causal=True).causal == [
        count_channel("D-11", row.anomaly_sequences, causal, row.num_values)
    ]
    assert "| telemanom's batches without hindsight (one batch late) | SMAP | 1 |" in out.output
    assert "| telemanom's 2018 processing, batch, on these errors | SMAP | 1 |" in out.output
    assert "| telemanom's published run (its own model) | SMAP | 1 |" in out.output
    plotted = CliRunner().invoke(
        tb.main, ["--cache", str(cache), "--channel", "D-11", "--data-root", str(DATA),
                  "--plot", str(tmp_path / "D-11.png")],
    )  # fmt: skip
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "D-11.png").read_bytes()[:4] == b"\x89PNG"
    unplotted = CliRunner().invoke(
        tb.main, ["--cache", str(cache), "--plot", str(tmp_path / "all.png")]
    )
    assert unplotted.exit_code != 0 and "needs exactly one --channel" in unplotted.output
    missing = CliRunner().invoke(
        tb.main, ["--cache", str(cache), "--channel", "A-1", "--data-root", str(DATA)]
    )
    assert missing.exit_code != 0 and "has no scores of A-1" in missing.output


def test_a_spike_the_smoothing_hides_flags_its_batch_only_with_the_spike_rule():
    from stream_detector.thresholds import build_threshold
    from stream_detector.thresholds.state_codec import pack_state, unpack_state

    errors = _errors()  # about 0.01: under min_error, so ε flags nothing
    # 3-step spikes: one in the warm-up, then one above 1.5 × it, one no higher than the one
    # before (still in the window of 30 batches), one above 1.5 × every earlier one, and one
    # above the warm-up's and the first ones' but not 1.5 × the last.
    for at, height in ((100, 0.1), (1000, 0.2), (1500, 0.2), (2000, 0.5), (2600, 0.6)):
        errors[at : at + 3] = height

    def verdicts(margin: float) -> list[int]:
        thr = build_threshold("telemanom_batches", spike_margin=margin)
        state = thr.initial_state(None)
        flagged = []
        for i, (error, value) in enumerate(zip(errors, VALUES, strict=True)):
            if i == 1700:  # the raw maxima survive the store's encoding
                state = unpack_state(json.loads(json.dumps(pack_state(state))))
            state, decision = thr.step(state, float(error), float(value))
            if decision.anomalous:
                flagged.append(i + 1)
        return flagged

    assert verdicts(0.0) == []  # telemanom's form: the smoothing hides every spike
    # Batches end at multiples of 70: 1050 holds step 1000, 2030 step 2000. The spike at 100
    # came in the warm-up (140) and is only a maximum to beat.
    assert verdicts(0.5) == [1050, 2030]
    # With a margin of 0.1, the spike at 2600 (0.6 > 1.1 × 0.5) flags its batch too.
    assert verdicts(0.1) == [1050, 2030, 2660]
    with pytest.raises(ValueError, match="spike_margin"):
        build_threshold("telemanom_batches", spike_margin=-0.1)
