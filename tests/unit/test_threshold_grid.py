"""The threshold grid: same numbers as `evaluate` for the same settings, and its score cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_detector.data.smap_msl import load_series
from stream_detector.data.windows import sliding_windows
from stream_detector.evaluation import threshold_grid
from stream_detector.evaluation.injection import KINDS
from stream_detector.evaluation.metrics import summarise
from stream_detector.evaluation.runner import ModelRecipe, evaluate, held_out_start
from stream_detector.evaluation.threshold_grid import ThresholdVariant, run_grid
from stream_detector.models.base import FitConfig
from stream_detector.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "smap_msl"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"SMAP/MSL data not found at {DATA}")

RECIPE = ModelRecipe(
    kind="dense_ae",
    window=30,
    hyperparameters={"score_features": [0], "hidden": [16, 8]},
    fit=FitConfig(epochs=2, device="cpu"),
    train_stride=4,
)
VARIANTS = [
    # The settings' defaults, as `evaluate` uses them.
    ThresholdVariant("default", Settings().threshold.model_dump(), Settings().alerts.model_dump()),
    ThresholdVariant(
        "k=8, 2 of 3", {"kind": "ewma_sigma", "k": 8}, {"min_hits": 2, "hit_window": 3}
    ),
]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _metrics(results, name):
    return summarise(results[name].counts)


def test_grid_default_variant_equals_evaluate_and_the_cache_replays_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    results = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS, ["D-11"], False, cache=cache)
    report = evaluate(DATA, "smap", RECIPE, Settings(), channels=["D-11"], progress=False)
    assert _metrics(results, "default") == summarise([o.counts for o in report.outcomes])
    assert {p.name for p in cache.iterdir()} == {"recipe.json", "D-11.pt", "D-11.npz"}
    copies = threshold_grid.INJECTION_COPIES
    assert copies == 8 and threshold_grid.ONE_ANOMALY_PER_COPY
    with np.load(cache / "D-11.npz") as cached:
        assert set(cached.files) == {
            "test",
            "validation",
            threshold_grid.SCORER_KEY,
        } | {f"injected_v4_copy{k}" for k in range(copies)}
    # One validation run per channel, one injected run per copy.
    assert len(results["default"].validation_by_channel) == 1
    assert len(results["default"].injected) == copies
    # D-11's held-out part (522 steps) has room for one 150-step anomaly, 100 from each end.
    # (A-1, flat in train, gets none.)
    for injected in results["default"].injected:
        assert injected.tp + injected.fn == 1
        assert injected.labelled[0][0] >= RECIPE.window + 250 + 100
    from stream_detector.data.smap_msl import load_series

    train = load_series(DATA, "D-11", "train")
    planted = [
        threshold_grid.held_out_injection(train, "D-11", 30, k, one_per_copy=True)
        for k in range(copies)
    ]
    assert results["default"].injected_kinds == [p.kinds for p in planted]
    # The copies take the kinds in turn, two of each in eight copies, the second round the
    # other way up: D-11 has one slot, and a drawn sign would repeat an anomaly half the time.
    assert sorted(k for p in planted for k in p.kinds) == sorted(2 * list(KINDS))
    held_out = train[-len(planted[0].values) :, 0]
    for first, second in zip(planted[:4], planted[4:], strict=True):
        assert first.kinds == second.kinds
        if first.kinds[0] in ("spike", "level_shift"):
            up = float(np.sum(first.values[:, 0] - held_out))
            down = float(np.sum(second.values[:, 0] - held_out))
            assert up > 0 > down

    def no_training(*args, **kwargs):
        raise AssertionError("a cached channel must not be trained again")

    monkeypatch.setattr(threshold_grid, "train_channel", no_training)
    again = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS, ["D-11"], False, cache=cache)
    for variant in VARIANTS:
        assert _metrics(again, variant.name) == _metrics(results, variant.name)
        assert again[variant.name].validation_episodes == results[variant.name].validation_episodes


def _grid_file(tmp_path):
    """VARIANTS as the grid file `evaluate --thresholds` and `grid-report` read."""
    grid = tmp_path / "grid.json"
    grid.write_text(
        __import__("json").dumps(
            [{"name": v.name, "threshold": v.threshold, "alerts": v.alerts} for v in VARIANTS]
        )
    )
    return grid


def test_shares_of_the_channels_merge_into_the_single_run(tmp_path):
    from click.testing import CliRunner

    from stream_detector.cli import main
    from stream_detector.evaluation.runner import dataset_rows

    cache = tmp_path / "cache"
    # P-2 has two label rows; A-1 comes first in the label file.
    chans = ["A-1", "P-2"]
    whole = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS, chans, False, cache=cache)
    shares = [run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS, [c], False, cache=cache)
              for c in reversed(chans)]  # fmt: skip
    order = list(dict.fromkeys(r.chan_id for r in dataset_rows(DATA, "both")))
    merged = threshold_grid.merge_results(shares, order)
    assert merged == whole
    assert [r.chan_id for r in merged["default"].rows] == ["A-1", "P-2", "P-2"]
    with pytest.raises(ValueError, match="A-1 is in two shares"):
        threshold_grid.merge_results([shares[1], whole], order)
    with pytest.raises(ValueError, match="different grids"):
        threshold_grid.merge_results([shares[0], {"other": shares[1]["default"]}], order)
    # Through the files `evaluate --thresholds` writes, and the command that reads them.
    grid = _grid_file(tmp_path)
    folders = []
    for i, share in enumerate(shares):
        threshold_grid.save_results(share, tmp_path / f"share-{i}" / threshold_grid.RESULTS_FILE)
        folders.append(str(tmp_path / f"share-{i}"))
    assert (
        threshold_grid.load_results(tmp_path / "share-0" / threshold_grid.RESULTS_FILE)
        == (shares[0])
    )
    out = CliRunner().invoke(
        main,
        ["grid-report", *folders, "--thresholds", str(grid), "--model", "dense_ae",
         "--out", str(tmp_path / "merged"), "--data-root", str(DATA)],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    # The default settings are the grid's "default": the report gives the written rule's
    # verdict on it, and is the single run's in everything but the time it was written.
    single = threshold_grid.write_grid(
        whole, DATA, "dense_ae", tmp_path / "single", VARIANTS, "default"
    )
    merged_doc = (tmp_path / "merged" / "thresholds.md").read_text()
    assert "The written rule (docs/threshold-race.md, tenth look)" in merged_doc
    assert merged_doc.splitlines()[:-1] == single.read_text().splitlines()[:-1]
    assert threshold_grid.load_results(tmp_path / "merged" / threshold_grid.RESULTS_FILE) == whole
    wrong = CliRunner().invoke(
        main,
        ["grid-report", folders[0], "--thresholds", str(REPO / "docs/threshold-race.json"),
         "--out", str(tmp_path / "wrong"), "--data-root", str(DATA)],
    )  # fmt: skip
    assert wrong.exit_code != 0 and "not the grid the shares were run with" in wrong.output


def test_a_variant_judged_alone_joins_the_rest_of_its_grid(tmp_path):
    from click.testing import CliRunner

    from stream_detector.cli import main

    cache = tmp_path / "cache"
    chans = ["A-1", "P-2"]
    whole = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS, chans, False, cache=cache)
    # Each variant alone, each channel alone: four shares of one run.
    shares = {
        (v.name, c): run_grid(DATA, "smap", RECIPE, Settings(), [v], [c], False, cache=cache)
        for v in reversed(VARIANTS)
        for c in chans
    }
    alone = [
        threshold_grid.merge_results([shares[(v.name, c)] for c in chans], chans)
        for v in reversed(VARIANTS)
    ]
    joined = threshold_grid.join_variants(alone)
    assert {name: joined[name] for name in whole} == whole
    with pytest.raises(ValueError, match="not run on the same channels"):
        threshold_grid.join_variants([alone[0], shares[(VARIANTS[0].name, "A-1")]])
    with pytest.raises(ValueError, match="in two shares of different grids"):
        threshold_grid.join_variants([alone[0], alone[0]])
    grid = _grid_file(tmp_path)
    folders = []
    for i, share in enumerate(shares.values()):
        threshold_grid.save_results(share, tmp_path / f"share-{i}" / threshold_grid.RESULTS_FILE)
        folders.append(str(tmp_path / f"share-{i}"))
    out = CliRunner().invoke(
        main,
        ["grid-report", *folders, "--thresholds", str(grid), "--model", "dense_ae",
         "--out", str(tmp_path / "joined"), "--data-root", str(DATA)],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    # In the grid's order, and the single run's report but for the time it was written.
    reported = threshold_grid.load_results(tmp_path / "joined" / threshold_grid.RESULTS_FILE)
    assert list(reported) == [v.name for v in VARIANTS] and reported == whole
    single = threshold_grid.write_grid(
        whole, DATA, "dense_ae", tmp_path / "single", VARIANTS, "default"
    )
    joined_doc = (tmp_path / "joined" / "thresholds.md").read_text()
    assert joined_doc.splitlines()[:-1] == single.read_text().splitlines()[:-1]


def test_scores_cached_by_another_scorer_are_scored_again_not_reused(tmp_path, monkeypatch):
    """Same recipe stamp, but the scores were made another way (or before the scorer mark)."""
    cache = tmp_path / "cache"
    first = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS[:1], ["A-1"], False, cache=cache)
    with np.load(cache / "A-1.npz") as cached:
        kept = {name: cached[name] for name in cached.files}
    stale = {name: array + 100.0 for name, array in kept.items() if name != "scorer"}
    monkeypatch.setattr(threshold_grid, "train_channel", lambda *a, **k: pytest.fail("trained"))
    for mark in ({}, {threshold_grid.SCORER_KEY: np.array('{"kind": "another"}')}):
        np.savez(cache / "A-1.npz", **stale, **mark)
        again = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS[:1], ["A-1"], False, cache)
        assert _metrics(again, "default") == _metrics(first, "default")
        with np.load(cache / "A-1.npz") as rewritten:
            assert str(rewritten[threshold_grid.SCORER_KEY]) == str(kept["scorer"])
            np.testing.assert_allclose(rewritten["test"], kept["test"], rtol=1e-6)


def test_a_recipe_fitted_before_the_held_out_part_never_trains_on_it(tmp_path):
    """The eighteenth look's forward chain: the model trains on the rows before the held-out
    fifth only, so the label-free columns there are out of sample even when shuffled."""
    forward = ModelRecipe(**{**RECIPE.__dict__, "split": "shuffled", "fit_part": "before_held_out"})
    train = load_series(DATA, "A-1", "train")
    fitted = forward.fitted_part(train)
    assert len(fitted) == held_out_start(len(train)) == int(len(train) * 0.8)
    np.testing.assert_array_equal(fitted, train[: len(fitted)])
    # Too short to have a held-out part longer than a window: no proxy, the whole split.
    assert len(forward.fitted_part(train[:100])) == 100
    assert RECIPE.fitted_part(train) is train
    assert forward.describe() == {
        **RECIPE.describe(),
        "split": "shuffled",
        "fit_part": "before_held_out",
    }
    assert "split" not in RECIPE.describe() and "fit_part" not in RECIPE.describe()
    # A cache's recipe.json reads back as the recipe that wrote it.
    for recipe in (RECIPE, forward):
        assert ModelRecipe.from_description(json.loads(json.dumps(recipe.describe()))) == recipe

    cache = tmp_path / "cache"
    run_grid(DATA, "smap", forward, Settings(), VARIANTS[:1], ["A-1"], False, cache=cache)
    checkpoint = threshold_grid.load_checkpoint(cache / "A-1.pt", device="cpu")
    windows = len(sliding_windows(fitted, RECIPE.window, RECIPE.train_stride))
    assert checkpoint.fit["train_windows"] + checkpoint.fit["val_windows"] == windows
    assert checkpoint.fit["split"] == "shuffled"


def test_a_cache_of_another_recipe_is_refused(tmp_path):
    cache = tmp_path / "cache"
    run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS[:1], ["A-1"], False, cache=cache)
    other = ModelRecipe(**{**RECIPE.__dict__, "window": 40})
    with pytest.raises(ValueError, match="another recipe"):
        run_grid(DATA, "smap", other, Settings(), VARIANTS[:1], ["A-1"], False, cache=cache)


def test_oracle_variants_are_marked_and_a_zero_fpr_target_raises_no_false_alarm(tmp_path):
    variants = [
        ThresholdVariant("f1 oracle", {"kind": "f1_optimal"}),
        ThresholdVariant("fpr 0", {"kind": "fpr_target", "params": {"fpr": 0.0}}),
        ThresholdVariant(
            "fpr 0, z", {"kind": "fpr_target", "params": {"fpr": 0.0}, "calibration": "zscore"}
        ),
    ]
    results = run_grid(DATA, "smap", RECIPE, Settings(), variants, ["A-1"], False)
    assert all(r.oracle for r in results.values())
    for name in ("fpr 0", "fpr 0, z"):
        # The fixed threshold sits at the highest normal window's score: every anomalous
        # window ends inside a label, so every predicted sequence overlaps one.
        assert summarise(results[name].counts).fp == 0
    # Calibration is monotone: the same windows are above the threshold either way.
    assert results["fpr 0"].counts == results["fpr 0, z"].counts
    table = threshold_grid.grid_table(results, DATA, "dense_ae")
    assert "f1 oracle (oracle: test labels)" in table


def _result(craft_rates, injected_found, oracle=False):
    """A VariantResult by hand: per channel (spacecraft, validation episodes, found?)."""
    from stream_detector.data.smap_msl import LabelRow
    from stream_detector.evaluation.metrics import count_channel

    res = threshold_grid.VariantResult(oracle=oracle)
    for i, ((craft, episodes), found) in enumerate(zip(craft_rates, injected_found, strict=True)):
        res.injected_rows.append(LabelRow(f"C-{i}", craft, [(10, 19)], ["point"], 100))
        res.validation_rows.append(res.injected_rows[-1])
        res.validation_by_channel.append(episodes)
        res.validation_steps_by_channel.append(10_000)
        res.injected.append(count_channel(f"C-{i}", [(10, 19)], [found] if found else [], 100))
    return res


def test_the_label_free_rule_reads_validation_alarms_and_injected_f1_only():
    both = [("SMAP", 0), ("MSL", 0)]
    results = {
        # Finds the SMAP anomaly, misses the MSL one: mean event F1 0.5.
        "half": _result(both, [(10, 19), None]),
        # Finds both, flagging 10× their length: event F1 1, composite F1 0.18.
        "wide": _result(both, [(0, 99), (0, 99)]),
        # Finds both exactly, but one false episode per 10k clean steps on MSL (0.1 per 1k)
        # is above the bar.
        "noisy": _result([("SMAP", 0), ("MSL", 1)], [(10, 19), (10, 19)]),
        # An oracle never wins, whatever its numbers.
        "oracle": _result(both, [(10, 19), (10, 19)], oracle=True),
    }
    scores = threshold_grid.label_free_scores(results)
    assert scores["wide"]["SMAP"].injected_f1 == pytest.approx(1.0)
    assert scores["wide"]["SMAP"].injected_composite_f1 == pytest.approx(2 * 0.1 / 1.1)
    assert scores["noisy"]["MSL"].validation_per_1k == pytest.approx(0.1)
    assert threshold_grid.label_free_choice(results) == "wide"
    del results["wide"]
    assert threshold_grid.label_free_choice(results) == "half"
    assert threshold_grid.label_free_choice({"noisy": results["noisy"]}) is None


def test_the_tie_break_rule_prefers_the_tighter_of_two_variants_that_find_the_same():
    both = [("SMAP", 0), ("MSL", 0)]
    results = {
        # Both find both anomalies (event F1 1). "wide" flags 100 points per channel,
        # composite F1 2·0.1/1.1 ≈ 0.18; "tight" flags 20, composite 2·0.5/1.5 ≈ 0.67.
        "wide": _result(both, [(0, 99), (0, 99)]),
        "tight": _result(both, [(5, 24), (5, 24)]),
        # Tighter still, but it misses MSL's anomaly: a lower event F1 is never redeemed.
        "tightest": _result(both, [(10, 19), None]),
    }
    assert threshold_grid.label_free_choice(results) == "wide"  # the race's rule: grid order
    assert threshold_grid.label_free_choice(results, tie_break_composite=True) == "tight"
    # Ties on composite F1 too: grid order again.
    results["tight too"] = _result(both, [(0, 19), (10, 29)])
    assert threshold_grid.label_free_choice(results, tie_break_composite=True) == "tight"


def test_the_choice_margin_bootstraps_channels_and_is_symmetric():
    rows = [("SMAP", 0)] * 4 + [("MSL", 0)] * 4
    results = {
        "all": _result(rows, [(10, 19)] * 8),  # finds every injected anomaly
        "none": _result(rows, [None] * 8),
        "all too": _result(rows, [(10, 19)] * 8),
        # Misses one SMAP anomaly of four: behind "all" in every draw that holds C-0 and
        # level in those that do not. A draw of 4 from 4 misses C-0 with (3/4)^4 ≈ 0.32.
        "one less": _result(rows, [None] + [(10, 19)] * 7),
    }
    margin = threshold_grid.choice_margin
    assert margin(results, "all", "none") == 1.0 and margin(results, "none", "all") == 0.0
    assert margin(results, "all", "all too") == 0.5  # never told apart
    ahead = margin(results, "all", "one less", resamples=4000)
    assert ahead == pytest.approx((1 - 0.75**4) + 0.5 * 0.75**4, abs=0.03)
    assert margin(results, "one less", "all", resamples=4000) == pytest.approx(1 - ahead)
    results["elsewhere"] = _result([("SMAP", 0)] * 8, [(10, 19)] * 8)
    results["elsewhere"].injected_rows[0] = results["all"].injected_rows[1]
    with pytest.raises(ValueError, match="same channels"):
        margin(results, "all", "elsewhere")


def test_the_choice_margin_draws_a_channel_with_all_its_copies():
    from stream_detector.data.smap_msl import LabelRow
    from stream_detector.evaluation.metrics import count_channel

    def variant(found_by_copy):
        """One SMAP channel C-0 with two copies, found as given, and C-1 always found."""
        res = threshold_grid.VariantResult()
        for chan, founds in (("C-0", found_by_copy), ("C-1", [(10, 19), (10, 19)])):
            row = LabelRow(chan, "SMAP", [(10, 19)], ["point"], 100)
            res.validation_rows.append(row)
            res.validation_by_channel.append(0)
            res.validation_steps_by_channel.append(10_000)
            for found in founds:
                res.injected.append(count_channel(chan, [(10, 19)], [found] if found else [], 100))
                res.injected_rows.append(row)
        return res

    results = {
        "both copies": variant([(10, 19), (10, 19)]),
        "one copy": variant([(10, 19), None]),
        # Finds the same as "both copies", flagging 30 points where it flags 10.
        "both, wide": variant([(0, 29), (0, 29)]),
    }
    scores = threshold_grid.label_free_scores(results)
    # Pooled over copies: 3 of 4 found, and C-1's two copies are one validation run.
    assert scores["one copy"]["SMAP"].injected_f1 == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert scores["one copy"]["SMAP"].validation_per_1k == 0.0
    margin = threshold_grid.choice_margin
    # A draw of two channels from two leaves out C-0 (where they differ) with p = 1/4.
    ahead = margin(results, "both copies", "one copy", resamples=4000)
    assert ahead == pytest.approx(0.75 + 0.5 * 0.25, abs=0.03)
    # Tied on event F1 in every draw: half, unless composite F1 breaks the tie, which it
    # does in the draws that hold C-0 (C-1 is the same in all three: a draw of it alone ties).
    assert margin(results, "both copies", "both, wide") == 0.5
    tie_broken = margin(results, "both copies", "both, wide", 4000, tie_break_composite=True)
    assert tie_broken == pytest.approx(0.75 + 0.5 * 0.25, abs=0.03)
    reverse = margin(results, "both, wide", "both copies", 4000, tie_break_composite=True)
    assert reverse == pytest.approx(1 - tie_broken)
    # The composite key never overrides a lead on event F1: "one copy" is tighter on C-0,
    # yet it loses every draw that holds C-0, and ties (half) those that do not.
    tighter = margin(results, "one copy", "both, wide", 4000, tie_break_composite=True)
    assert tighter == pytest.approx(0.5 * 0.25, abs=0.03)


def test_the_choice_margin_of_one_data_set_draws_its_channels_alone():
    rows = [("SMAP", 0)] * 4 + [("MSL", 0)] * 4
    results = {
        "all": _result(rows, [(10, 19)] * 8),
        # Misses every MSL anomaly and none of SMAP's.
        "smap only": _result(rows, [(10, 19)] * 4 + [None] * 4),
    }
    margin = threshold_grid.choice_margin
    assert margin(results, "all", "smap only") == 1.0
    assert margin(results, "all", "smap only", craft="MSL") == 1.0
    assert margin(results, "all", "smap only", craft="SMAP") == 0.5  # the same on SMAP
    with pytest.raises(ValueError, match="no injected run of 'SMAP-2'"):
        margin(results, "all", "smap only", craft="SMAP-2")


def test_the_written_rule_moves_the_default_only_on_a_lead_on_each_data_set():
    rows = [("SMAP", 0)] * 4 + [("MSL", 0)] * 4
    found = [(10, 19)] * 8
    results = {
        "incumbent": _result(rows, [None, *found[1:4], None, *found[5:]]),
        # Finds all: ahead of the incumbent on each data set wherever a draw holds C-0 (SMAP)
        # or C-4 (MSL), level elsewhere: 1 − 0.75⁴ + half of 0.75⁴ ≈ 0.84 on each alone.
        "better": _result(rows, found),
    }
    decision = threshold_grid.race_decision(results, "incumbent")
    assert decision.pick == "better" and set(decision.margins) == {"all", "SMAP", "MSL"}
    assert decision.margins["SMAP"] == pytest.approx(1 - 0.75**4 / 2, abs=0.03)
    assert decision.margins["all"] > decision.margins["SMAP"]
    assert not decision.replaces and decision.default == "incumbent"  # 84 % < 90 %
    assert "the default `incumbent` stays" in decision.explain()
    # A lower bar, or a lead in every draw, and it moves.
    assert threshold_grid.race_decision(results, "incumbent", min_margin=0.8).default == "better"
    results["far behind"] = _result(rows, [None] * 8)
    decision = threshold_grid.race_decision(results, "far behind")
    assert decision.replaces and decision.default == "better"
    assert decision.margins == {"all": 1.0, "MSL": 1.0, "SMAP": 1.0}
    assert "it replaces the default `far behind`" in decision.explain()
    # The pick is the incumbent: nothing to weigh.
    decision = threshold_grid.race_decision({"better": results["better"]}, "better")
    assert decision.margins == {} and decision.default == "better"
    assert "it stays" in decision.explain()
    with pytest.raises(ValueError, match="not in the grid"):
        threshold_grid.race_decision(results, "gone")


def test_the_incumbent_is_the_grid_variant_the_engine_builds_as_the_settings(monkeypatch, tmp_path):
    for key in [k for k in __import__("os").environ if k.startswith("SD_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env
    variants = threshold_grid.load_grid(REPO / "docs/threshold-race-lstm-dt.json")
    default = Settings()
    assert (
        threshold_grid.incumbent_variant(variants, default)
        == "telemanom, buffer 100, relearn 100, spikes ×1.5, lead 49"
    )
    lead_99 = default.model_copy(update={"alerts": default.alerts.model_copy(update={"lead": 99})})
    assert (
        threshold_grid.incumbent_variant(variants, lead_99)
        == "telemanom, buffer 100, relearn 100, spikes ×1.5"
    )
    other = default.model_copy(
        update={"threshold": default.threshold.model_copy(update={"kind": "p2_quantile"})}
    )
    assert threshold_grid.incumbent_variant(variants, other) is None
    # A grid with oracles (fitted on test labels, not strategies) is read past them.
    oracle = ThresholdVariant("f1 oracle", {"kind": "f1_optimal"})
    assert threshold_grid.incumbent_variant([oracle, *variants], default) == (
        "telemanom, buffer 100, relearn 100, spikes ×1.5, lead 49"
    )


def test_the_grid_report_names_the_runner_up_and_the_margin(tmp_path):
    both = [("SMAP", 0), ("MSL", 0)]
    results = {
        "half": _result(both, [(10, 19), None]),
        "wide": _result(both, [(0, 99), (0, 99)]),
    }
    for res in results.values():
        res.injected_kinds = [["spike"] for _ in res.injected]
    doc = threshold_grid.write_grid(results, DATA, "dense_ae", tmp_path, []).read_text()
    # One channel per data set: "wide" finds the MSL anomaly "half" misses in every draw.
    assert "`wide`; the runner-up is `half`, and the choice stays ahead of it in 100%" in doc
    assert "Injected runs per channel (copies of the injection, pooled): 1." in doc
    # "tight" finds what "wide" finds: the race's rule cannot tell them apart, the
    # tie-break can.
    results["tight"] = _result(both, [(5, 24), (5, 24)])
    results["tight"].injected_kinds = [["spike"], ["spike"]]
    doc = threshold_grid.write_grid(results, DATA, "dense_ae", tmp_path, []).read_text()
    assert "then the best mean injected F1): `wide`; the runner-up is `tight`" in doc
    assert "stays ahead of it in 50% of 1,000 draws" in doc
    assert (
        "composite F1: `tight`; the runner-up is `wide`, and the choice stays ahead of it "
        "in 100%" in " ".join(doc.split())
    )
    assert "The written rule" not in doc  # no incumbent named
    doc = threshold_grid.write_grid(results, DATA, "dense_ae", tmp_path, [], "half").read_text()
    # One channel per data set: "tight" leads "half" on MSL in every draw; on SMAP both find
    # the anomaly and "tight" flags more, so the composite tie-break never gives it a draw.
    assert (
        "The written rule (docs/threshold-race.md, tenth look): the pick `tight` stays ahead "
        "of the default in all 100%, MSL 100%, SMAP 0% of 1,000 draws (the bar: 90% on each): "
        "the default `half` stays." in " ".join(doc.split())
    )


def test_two_detectors_under_one_threshold_are_drawn_in_pairs(tmp_path):
    from click.testing import CliRunner

    from stream_detector.cli import main

    both = [("SMAP", 0), ("SMAP", 0), ("MSL", 0)]
    # "better" finds the one MSL anomaly "worse" misses; on SMAP they find the same, and
    # "better" flags 20 steps more on C-1: every draw of SMAP's channels holding C-1 goes to
    # "worse" on composite F1 (3 of 4 draws of two channels), the others tie.
    better = _result(both, [(10, 19), (5, 34), (10, 19)])
    worse = _result(both, [(10, 19), (10, 19), None])
    margins = threshold_grid.detector_margins(better, worse)
    assert margins["MSL"] == 1.0
    assert margins["SMAP"] == pytest.approx(0.25 * 0.5, abs=0.05)  # ties count half
    assert margins["all"] == 1.0  # MSL's find outweighs any composite on SMAP
    doc = threshold_grid.compare_detectors(better, worse, ("keras", "torch"), DATA)
    assert "`keras` stays ahead of `torch`" in doc and "MSL 100.0%" in doc
    with pytest.raises(ValueError, match="same channels"):
        threshold_grid.detector_margins(better, _result(both[:2], [None, None]))
    # The command reads two saved results and compares them under the named variant.
    for name, res in (("a", better), ("b", worse)):
        threshold_grid.save_results({"v": res}, tmp_path / name / threshold_grid.RESULTS_FILE)
    grid = tmp_path / "grid.json"
    grid.write_text('[{"name": "v", "threshold": {"kind": "telemanom"}}]')
    args = ["grid-compare", str(tmp_path / "a"), str(tmp_path / "b"), "--thresholds", str(grid)]
    result = CliRunner().invoke(main, [*args, "--variant", "v", "--names", "keras,torch"])
    assert result.exit_code == 0, result.output
    assert "Under `v`" in result.output and "MSL 100.0%" in result.output
    result = CliRunner().invoke(main, [*args, "--variant", "gone"])
    assert result.exit_code != 0 and "'gone' is not in both results" in result.output
    result = CliRunner().invoke(main, [*args, "--variant", "v", "--names", "one"])
    assert result.exit_code != 0 and "expected two names" in result.output


def test_rank_correlation_by_hand():
    rho = threshold_grid.rank_correlation
    assert rho([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rho([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share their mean rank: ranks (0, 1.5, 1.5, 3) and (0, 2, 1, 3); ρ = 4.5 / √(4.5 · 5).
    assert rho([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert np.isnan(rho([1, 1, 1], [1, 2, 3])) and np.isnan(rho([1], [2]))
    with pytest.raises(ValueError, match="pairs"):
        rho([1, 2], [1])


def test_proxy_agreement_ranks_injected_against_test_f1_without_the_oracles():
    from stream_detector.data.smap_msl import LabelRow
    from stream_detector.evaluation.metrics import count_channel

    def variant(injected_found, test_found, oracle=False):
        res = _result([("SMAP", 0), ("SMAP", 0)], injected_found, oracle)
        for i, found in enumerate(test_found):
            res.rows.append(LabelRow(f"C-{i}", "SMAP", [(50, 59)], ["point"], 100))
            res.counts.append(count_channel(f"C-{i}", [(50, 59)], [(50, 59)] if found else [], 100))
        return res

    hit = (10, 19)
    results = {
        # Injected F1 1, 2/3, 0 against test F1 0, 2/3, 1: the proxy ranks them backwards.
        "a": variant([hit, hit], [False, False]),
        "b": variant([hit, None], [True, False]),
        "c": variant([None, None], [True, True]),
        # Best on both, but fitted on the test labels: left out, or ρ would not be −1.
        "oracle": variant([hit, hit], [True, True], oracle=True),
    }
    agreement = threshold_grid.proxy_agreement(results)
    assert set(agreement) == {"SMAP"}
    assert agreement["SMAP"].n_variants == 3
    assert agreement["SMAP"].with_f1 == pytest.approx(-1.0)
    assert agreement["SMAP"].with_composite_f1 == pytest.approx(-1.0)


def test_injected_anomalies_are_counted_by_kind_and_spacecraft():
    from stream_detector.data.smap_msl import LabelRow
    from stream_detector.evaluation.metrics import count_channel

    res = threshold_grid.VariantResult()
    for chan, craft, spans, found, kinds in [
        ("C-0", "SMAP", [(10, 19), (50, 59)], [(12, 14)], ["spike", "flatline"]),
        ("C-1", "MSL", [(10, 19)], [(15, 30)], ["spike"]),
        ("C-2", "SMAP", [(30, 39)], [(40, 45)], ["spike"]),  # next to it, not on it
    ]:
        res.injected.append(count_channel(chan, spans, found, 100))
        res.injected_rows.append(LabelRow(chan, craft, [(0, 1)], ["point"], 100))
        res.injected_kinds.append(kinds)
    assert threshold_grid.injected_found_by_kind(res, "SMAP") == {
        "spike": (1, 2),
        "flatline": (0, 1),
    }
    assert threshold_grid.injected_found_by_kind(res, "MSL") == {"spike": (1, 1)}
    table = threshold_grid.injected_kinds_table({"v": res})
    assert "| threshold | data | flatline | spike |" in table
    assert "| v | MSL |  | 1 / 1 |" in table and "| v | SMAP | 0 / 1 | 1 / 2 |" in table


def test_a_channel_flat_in_train_gets_no_injected_anomaly():
    from stream_detector.data.smap_msl import load_series

    train = load_series(DATA, "A-1", "train")
    assert np.ptp(train[:, 0]) == 0, "A-1's telemetry column is constant in train"
    injected = threshold_grid.held_out_injection(train, "A-1", 30)
    assert injected.sequences == [] and injected.kinds == []


def test_one_anomaly_per_copy_never_has_a_neighbour_and_all_slots_is_the_old_layout(tmp_path):
    from stream_detector.data.smap_msl import load_series

    # P-11's held-out part has room for two anomalies: every slot filled, they neighbour.
    train = load_series(DATA, "P-11", "train")
    for k in range(8):
        assert len(threshold_grid.held_out_injection(train, "P-11", 251, k).sequences) == 2
        one = threshold_grid.held_out_injection(train, "P-11", 251, k, one_per_copy=True)
        assert len(one.sequences) == 1
    # Either slot, drawn: slot 0 starts at 601, slot 1 at 851 (a spike sits mid-slot).
    starts = [
        threshold_grid.held_out_injection(train, "P-11", 251, k, one_per_copy=True).sequences[0][0]
        for k in range(8)
    ]
    assert {(start - 601) // 250 for start in starts} == {0, 1}
    cache = tmp_path / "cache"
    old = run_grid(DATA, "smap", RECIPE, Settings(), VARIANTS[:1], ["D-11"], False, cache, 2, False)
    with np.load(cache / "D-11.npz") as cached:
        assert {threshold_grid.INJECTED_KEY, f"{threshold_grid.INJECTED_KEY}_copy1"} <= set(
            cached.files
        )
    d11 = load_series(DATA, "D-11", "train")
    assert old["default"].injected_kinds == [
        threshold_grid.held_out_injection(d11, "D-11", 30, k).kinds for k in range(2)
    ]


def test_copy_0_is_the_injection_grids_had_before_the_copies():
    """Cached `injected_v2` scores (and every earlier look's numbers) stay valid."""
    from stream_detector.data.smap_msl import load_series

    train = load_series(DATA, "D-11", "train")
    first = threshold_grid.held_out_injection(train, "D-11", 30)
    again = threshold_grid.held_out_injection(train, "D-11", 30, 0)
    assert np.array_equal(again.values, first.values) and again.sequences == first.sequences
    # Before the copies (c3866b0) D-11 got one noise burst at 380-529 with window 30.
    assert first.kinds == ["noise_burst"] and first.sequences == [(380, 529)]
    assert threshold_grid.injected_key(0) == threshold_grid.INJECTED_KEY == "injected_v2"
    assert threshold_grid.injected_key(3) == "injected_v2_copy3"
