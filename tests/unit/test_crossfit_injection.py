"""The late key: one anomaly near the end of each cross-fitted half, by hand, then on one real
cache through the engine, and the report that puts it to rule v6."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_detector.evaluation import crossfit_injection as ci
from stream_detector.evaluation.injection import KINDS
from stream_detector.evaluation.threshold_grid import (
    INJECTION_LENGTH,
    INJECTION_MARGIN,
    INJECTION_WARMUP,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


def _half(length: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([np.sin(np.arange(length) / 7.0), rng.normal(size=length)], axis=1).astype(
        np.float32
    )


def test_one_anomaly_ends_a_margin_before_the_half_does():
    half = _half(1000)
    seen = []
    for copy in range(8):
        injected = ci.late_injection(half, "X-1", fold=0, copy=copy, window=30)
        assert injected is not None and len(injected.kinds) == 1
        kind = injected.kinds[0]
        seen.append(kind)
        ((start, end),) = injected.sequences
        if kind == "spike":  # three steps in the middle of the slot
            assert (start, end) == (750 + INJECTION_LENGTH // 2, 752 + INJECTION_LENGTH // 2)
        else:
            assert (start, end) == (1000 - INJECTION_MARGIN - INJECTION_LENGTH, 899)
        changed = np.nonzero(injected.values[:, 0] != half[:, 0])[0]
        assert changed.min() >= 750 and changed.max() <= 899
        assert np.array_equal(injected.values[:, 1], half[:, 1])  # only the first column
        moved = injected.values[start : end + 1, 0] - half[start : end + 1, 0]
        if kind in ("spike", "level_shift"):
            # Up in the first round of kinds, down in the second.
            assert np.all(moved > 0) if copy < len(KINDS) else np.all(moved < 0)
    # The kinds in turn, as the held-out key's copies: each twice, once per direction.
    assert seen[:4] == seen[4:] and sorted(seen[:4]) == sorted(KINDS)
    again = ci.late_injection(half, "X-1", fold=0, copy=2, window=30)
    assert again is not None
    assert np.array_equal(again.values, ci.late_injection(half, "X-1", 0, 2, 30).values)


def test_a_half_too_short_to_warm_up_or_flat_gets_none():
    window = 30
    # The anomaly starts 250 steps before the end; it needs window + warm-up steps before it.
    shortest = window + INJECTION_WARMUP + INJECTION_LENGTH + INJECTION_MARGIN
    assert ci.late_injection(_half(shortest), "X-1", 0, 0, window) is not None
    assert ci.late_injection(_half(shortest - 1), "X-1", 0, 0, window) is None
    flat = _half(1000)
    flat[:, 0] = 3.0
    assert ci.late_injection(flat, "X-1", 0, 0, window) is None


def _variants():
    from stream_detector.evaluation.threshold_grid import ThresholdVariant
    from stream_detector.settings import Settings

    default = ThresholdVariant(
        "default", Settings().threshold.model_dump(), Settings().alerts.model_dump()
    )
    # A fixed threshold under every score flags each half as one episode, which overlaps
    # the anomaly: a find, and no false episode. One over every score finds nothing.
    always = ThresholdVariant("always", {"kind": "fixed", "params": {"value": 1e-12}})
    never = ThresholdVariant("never", {"kind": "fixed", "params": {"value": 1e12}})
    return [default, always, never]


def test_each_fold_and_copy_is_judged_by_the_engine_on_its_own_scores(d11_cache, monkeypatch):
    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.crossfit_replay import fold_halves
    from stream_detector.evaluation.metrics import count_channel
    from stream_detector.evaluation.threshold_grid import run_engine
    from stream_detector.serving import ServedModel
    from stream_detector.settings import Settings
    from stream_detector.training.checkpoint import load_checkpoint

    variants = _variants()
    results, left_out = ci.run_late_injection(DATA, "smap", d11_cache, variants, ["D-11"])
    assert left_out == []
    assert len(results["always"].injected) == 16  # two folds, eight copies each
    assert all((c.tp, c.fp, c.fn) == (1, 0, 0) for c in results["always"].injected)
    assert all((c.tp, c.fp, c.fn) == (0, 0, 1) for c in results["never"].injected)
    assert {r.chan_id for r in results["default"].injected_rows} == {"D-11"}
    assert {r.spacecraft for r in results["default"].injected_rows} == {"SMAP"}

    # The default's count of fold 1, copy 5, made again from the model file and the values:
    # fold 1 was trained on the second half and scores the first.
    halves = fold_halves(load_series(DATA, "D-11", "train"), 30)
    assert halves is not None
    model = ServedModel(load_checkpoint(d11_cache / "crossfit" / "D-11.fold1.pt", device="cpu"))
    injected = ci.late_injection(halves[0], "D-11", 1, 5, 30)
    assert injected is not None
    run = run_engine(variants[0].settings(Settings()), model, "D-11", injected.values, None)
    expected = count_channel("D-11", injected.sequences, run.episodes(), len(injected.values))
    assert results["default"].injected[8 + 5] == expected
    assert results["default"].injected_kinds[8 + 5] == injected.kinds

    # Recorded summed per channel and copy, the runs give the same key, halves and margins.
    from stream_detector.evaluation import threshold_grid as tg
    from stream_detector.evaluation.proxy_check import half_of

    record = ci.save_late(d11_cache.parent / "late.json.gz", results, source="test")
    recorded = ci.load_late(record)
    assert len(recorded["default"].injected) == 8
    assert tg.label_free_scores(recorded) == tg.label_free_scores(results)
    for half in (0, 1):
        assert tg.label_free_scores({"d": half_of(recorded["default"], half)}) == (
            tg.label_free_scores({"d": half_of(results["default"], half)})
        )
    assert tg.choice_margin(recorded, "always", "default") == (
        tg.choice_margin(results, "always", "default")
    )

    # A second run reads every copy's scores from the fold cache.
    def no_scoring(*args, **kwargs):
        raise AssertionError("a cached copy was scored again")

    monkeypatch.setattr(ci, "raw_scores", no_scoring)
    again, _ = ci.run_late_injection(DATA, "smap", d11_cache, variants, ["D-11"])
    assert again["default"].injected == results["default"].injected


def test_warm_each_injected_half_comes_after_the_other_half_on_one_state(d11_cache):
    from stream_detector.evaluation.crossfit_replay import (
        cache_recipe,
        channel_folds,
        fold_folder,
        fold_recipe,
    )
    from stream_detector.evaluation.metrics import count_channel
    from stream_detector.evaluation.threshold_grid import ScoreCache, run_engine
    from stream_detector.serving import ServedModel
    from stream_detector.settings import Settings

    variants = _variants()
    results, left_out = ci.run_late_injection(
        DATA, "smap", d11_cache, variants, ["D-11"], warm=True
    )
    assert left_out == []
    assert len(results["always"].injected) == 16
    # An episode open from the first part on counts from the gap: a find, never a false one.
    assert all((c.tp, c.fp, c.fn) == (1, 0, 0) for c in results["always"].injected)
    assert all((c.tp, c.fp, c.fn) == (0, 0, 1) for c in results["never"].injected)

    # Fold 0's copy 3 by hand: the first half as fold 1 scored it, a skipped step, then the
    # second half with the anomaly as fold 0 scored it, one engine.
    recipe = fold_recipe(cache_recipe(d11_cache))
    store = ScoreCache(fold_folder(d11_cache), recipe)
    folds = channel_folds(DATA, "D-11", recipe, store, Settings())
    injected = ci.late_injection(folds[0].scored, "D-11", 0, 3, 30)
    assert injected is not None
    late_scores = store.load("D-11.fold0")[1][ci.LATE_KEY.format(copy=3)]
    values = np.concatenate([folds[1].scored, injected.values])
    run = run_engine(
        variants[0].settings(Settings()),
        ServedModel(folds[1].checkpoint),
        "D-11",
        values,
        np.concatenate([folds[1].scores, late_scores]),
        breaks=(len(folds[1].scored),),
    )
    gap = len(folds[1].scored) + 1
    found = [(max(s, gap) - gap, e - gap) for s, e in run.episodes() if e >= gap]
    expected = count_channel("D-11", injected.sequences, found, len(injected.values))
    assert results["default"].injected[3] == expected

    # Where the other half holds too few scores to warm on, the fold is left out.
    few, left_out = ci.run_late_injection(
        DATA, "smap", d11_cache, variants[:1], ["D-11"], warm=True, warm_min_scores=10**6
    )
    assert few["default"].injected == []
    assert left_out == [f"D-11 fold {i} (under 1000000 to warm on)" for i in (0, 1)]


def test_the_late_runs_replace_a_grids_injected_runs_and_nothing_else():
    from tests.unit.test_threshold_grid import _result

    both = [("SMAP", 0), ("MSL", 0)]
    grid = {
        "a": _result(both, [(10, 19), None]),
        "b": _result(both, [None, None]),
        "oracle": _result(both, [(10, 19), (10, 19)], oracle=True),
    }
    late = {"a": _result(both, [None, None]), "b": _result(both, [(10, 19), (10, 19)])}
    keyed = ci.with_key(grid, late)
    assert keyed["a"].injected == late["a"].injected and keyed["b"].injected == late["b"].injected
    assert keyed["a"].validation_by_channel == grid["a"].validation_by_channel
    assert keyed["oracle"] is grid["oracle"]
    assert grid["a"].injected[0].tp == 1  # the grid's own results are left as they were
    with pytest.raises(ValueError, match="no late injected runs of: b"):
        ci.with_key(grid, {"a": late["a"]})


def test_the_report_checks_the_key_and_gives_rule_v6s_verdict(d11_cache, tmp_path):
    import json

    from click.testing import CliRunner

    from stream_detector.evaluation import crossfit_replay as cf
    from stream_detector.evaluation.replay_counts import save_counts
    from stream_detector.evaluation.threshold_grid import run_grid, save_results
    from stream_detector.settings import Settings

    variants = _variants()
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(
        json.dumps(
            [{"name": v.name, "threshold": v.threshold, "alerts": v.alerts} for v in variants]
        )
    )
    recipe = cf.cache_recipe(d11_cache)
    tested = run_grid(DATA, "smap", recipe, Settings(), variants, ["D-11"], False, cache=d11_cache)
    save_results(tested, tmp_path / "tested" / "grid-results.pkl")
    counts, _ = cf.replay_crossfit(DATA, "smap", d11_cache, variants, ["D-11"])
    (tmp_path / "counts").mkdir()
    save_counts(
        tmp_path / "counts" / "smap.json", counts, stream="cross-fitted train", grid=grid_file
    )
    args = ["--cache", str(d11_cache), "--data-root", str(DATA), "--dataset", "smap"]
    out = CliRunner().invoke(
        ci.main,
        [
            "run",
            *args,
            "--channel",
            "D-11",
            "--thresholds",
            str(grid_file),
            "--out",
            str(tmp_path / "late"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "16 injected runs per variant" in out.output
    report_args = [
        "report",
        str(tmp_path / "late"),
        "--thresholds",
        str(grid_file),
        "--against",
        str(tmp_path / "tested"),
        "--counts",
        str(tmp_path / "counts"),  # a folder: every *.json in it
        "--data-root",
        str(DATA),
    ]
    out = CliRunner().invoke(ci.main, report_args)
    assert out.exit_code == 0, out.output
    assert "| SMAP | 3 |" in out.output
    assert "rule v6 (docs/threshold-race.md, thirty-fourth look" in out.output
    report = out.output
    out = CliRunner().invoke(ci.main, [*report_args, "--rule", "v7"])
    assert out.exit_code == 0, out.output
    assert "a check fails: rule v7 may not judge" in out.output
    assert "rule v7 (docs/threshold-race.md, thirty-fifth look" in out.output
    assert out.output.split("\n")[8:] == report.split("\n")[8:]  # the same key and table
    with_checks = out.output

    # Without the test runs the checks are not computed; the decision is the same one.
    at = report_args.index("--against")
    out = CliRunner().invoke(ci.main, [*report_args[:at], *report_args[at + 2 :], "--rule", "v7"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("no test runs given (--against)")
    assert "the decision alone, its checks not computed" in out.output
    verdict = [line for line in with_checks.splitlines() if line.startswith("rule v7 (")]
    assert len(verdict) == 1 and verdict[0] in out.output.splitlines()
    key_rows = [line for line in with_checks.splitlines() if line.startswith("| always |")]
    alone_rows = [line for line in out.output.splitlines() if line.startswith("| always |")]
    late_key = key_rows[0].split(" | ")[1]
    assert alone_rows == [f"| always | {late_key} |  | " + key_rows[0].split(" | ", 3)[3]]

    # A variant judged alone joins the others' runs: "never" run apart, then reported with
    # the first run's two other variants, prints what the run of all three printed.
    alone = tmp_path / "never.json"
    alone.write_text(json.dumps([{"name": "never", "threshold": variants[2].threshold}]))
    pair = tmp_path / "pair.json"
    pair.write_text(
        json.dumps(
            [{"name": v.name, "threshold": v.threshold, "alerts": v.alerts} for v in variants[:2]]
        )
    )
    for grid, folder in ((alone, "late-never"), (pair, "late-pair")):
        run = [
            *args,
            "--channel",
            "D-11",
            "--thresholds",
            str(grid),
            "--out",
            str(tmp_path / folder),
        ]
        out = CliRunner().invoke(ci.main, ["run", *run])
        assert out.exit_code == 0, out.output
    joined = [str(tmp_path / "late-pair"), str(tmp_path / "late-never"), *report_args[2:]]
    out = CliRunner().invoke(ci.main, ["report", *joined])
    assert out.exit_code == 0, out.output
    assert out.output == report
    # One channel ranks three variants: too few to pass the checks, but the table is there.
    assert "| always | 1.000 |" in out.output and "| never | 0.000 |" in out.output


def test_two_detectors_are_compared_on_the_channels_both_judged_alike():
    from tests.unit.test_threshold_grid import _result

    both = [("SMAP", 0), ("MSL", 0), ("MSL", 0)]
    # C-0 and C-1 found by the first only; C-2 has a run fewer for the second detector.
    first = _result(both, [(10, 19), (10, 19), (10, 19)])
    second = _result(both[:2], [None, None])
    second.injected_rows.append(first.injected_rows[2])
    second.injected.append(second.injected[0])
    first.injected_rows.append(first.injected_rows[2])  # C-2: two runs here, one there
    first.injected.append(first.injected[2])
    for res in (first, second):
        res.injected_kinds = [[] for _ in res.injected]
    a, b, dropped = ci.common_channels(first, second)
    assert dropped == ["C-2"]
    assert (
        [r.chan_id for r in a.injected_rows]
        == ["C-0", "C-1"]
        == [r.chan_id for r in b.injected_rows]
    )
    text = ci.compare_report(first, second, ("new", "old"), "default")
    assert "| new | SMAP | 1 | 1.000 |" in text and "| old | MSL | 1 | 0.000 |" in text
    assert "`new` stays ahead of `old` on the key in all 100.0%, MSL 100.0%, SMAP 100.0%" in text
    assert "Left out (not the same runs for both): C-2." in text


def test_compare_reads_records_and_finds_no_lead_between_equal_runs():
    from click.testing import CliRunner

    records = Path(__file__).resolve().parents[2] / "docs" / "late-key"
    grid = Path(__file__).resolve().parents[2] / "docs" / "threshold-race-batches.json"
    args = ["compare", "--thresholds", str(grid), "--names", "a", "b", "--data-root", str(DATA)]
    # The thirty-sixth look's record holds the thirty-fifth's runs of the 24 variants.
    warm = records / "telemanom-recipe-batches-warm.json.gz"
    spikes = records / "telemanom-recipe-batches-spikes-warm.json.gz"
    out = CliRunner().invoke(ci.main, [*args, "--first", str(warm), "--second", str(spikes)])
    assert out.exit_code == 0, out.output
    assert "| a | MSL | 264 | 0.696 |" in out.output
    assert "in all 50.0%, MSL 50.0%, SMAP 50.0%" in out.output


def test_a_settled_count_drops_the_episodes_before_its_step_and_cuts_those_across_it():
    from stream_detector.data.smap_msl import LabelRow
    from stream_detector.evaluation.metrics import count_channel
    from stream_detector.evaluation.threshold_grid import VariantResult

    row = LabelRow("C-0", "MSL", [], [], 0)
    # One false episode before step 300, one across it, one after; the anomaly is found.
    counted = count_channel(
        "C-0", [(600, 749)], [(10, 40), (290, 320), (400, 410), (700, 720)], 1000
    )
    late = {"v": VariantResult(injected=[counted], injected_rows=[row], injected_kinds=[[]])}
    settled = ci.judged_from(late, 300)["v"].injected[0]
    assert (counted.fp, settled.fp) == (3, 2) and (settled.tp, settled.fn) == (1, 0)
    assert settled.predicted == [(300, 320), (400, 410), (700, 720)]
    assert settled.flagged_points == 21 + 11 + 21
    assert ci.judged_from(late, 0)["v"].injected[0] == counted  # from the start: as it was
    with pytest.raises(ValueError, match="starts before step 601"):
        ci.judged_from(late, 601)
