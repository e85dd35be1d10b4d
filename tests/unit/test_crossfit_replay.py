"""Each threshold of a grid over a channel's train split, cross-fitted in two halves: the
halves by hand, then one real cache, counted against the engine's own run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_detector.evaluation import crossfit_replay as cf
from stream_detector.evaluation.train_replay import ReplayCount

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


def test_a_train_split_is_halved_with_the_odd_step_in_the_first_half():
    train = np.arange(18, dtype=np.float32).reshape(9, 2)
    halves = cf.fold_halves(train, window=2)
    assert halves is not None
    first, second = halves
    assert first[:, 0].tolist() == [0, 2, 4, 6, 8] and second[:, 0].tolist() == [10, 12, 14, 16]
    # Halves of 4 and 3 steps: the second is under two windows of 2, so no folds at all.
    assert cf.fold_halves(train[:7], window=2) is None


def test_the_recipe_is_read_back_as_the_cache_stamped_it(d11_cache, tmp_path):
    recipe = cf.cache_recipe(d11_cache)
    stamped = (d11_cache / "recipe.json").read_text().strip()
    assert json.dumps(recipe.describe(), sort_keys=True) == stamped
    from click import ClickException

    with pytest.raises(ClickException, match=r"no recipe\.json"):
        cf.cache_recipe(tmp_path)


def test_a_grid_over_one_channels_two_folds(d11_cache, monkeypatch):
    from click.testing import CliRunner

    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.threshold_grid import ThresholdVariant, run_engine
    from stream_detector.serving import ServedModel
    from stream_detector.settings import Settings
    from stream_detector.training.checkpoint import load_checkpoint

    default = ThresholdVariant(
        "default", Settings().threshold.model_dump(), Settings().alerts.model_dump()
    )
    # A fixed threshold under every score: each half is one episode.
    always = ThresholdVariant("always", {"kind": "fixed", "params": {"value": 1e-12}})
    counts, skipped = cf.replay_crossfit(DATA, "smap", d11_cache, [default, always], ["D-11"])
    assert skipped == []
    train = load_series(DATA, "D-11", "train")
    half = (len(train) + 1) // 2
    halves = [train[:half], train[half:]]
    scored = sum(len(h) - 30 + 1 for h in halves)  # one score per full window of each half
    assert counts["always"]["SMAP"] == ReplayCount(2, scored)
    # Fold 0 was trained on the first half and scores the second; fold 1 the other way.
    episodes = 0
    for index in range(cf.FOLDS):
        model_file = d11_cache / "crossfit" / f"D-11.fold{index}.pt"
        model = ServedModel(load_checkpoint(model_file, device="cpu"))
        run = run_engine(default.settings(Settings()), model, "D-11", halves[1 - index], None)
        episodes += len(run.episodes())
    assert counts["default"]["SMAP"] == ReplayCount(episodes, scored)

    # A second grid only replays: the fold models and their scores come from the cache.
    def no_training(*args, **kwargs):
        raise AssertionError("a cached fold was trained again")

    monkeypatch.setattr(cf, "_train_fold", no_training)
    grid = d11_cache.parent / "grid.json"
    grid.write_text(
        '[{"name": "always", "threshold": {"kind": "fixed", "params": {"value": 1e-12}}}]'
    )
    args = ["--cache", str(d11_cache), "--thresholds", str(grid), "--data-root", str(DATA)]
    sharded = [*args, "--channel", "D-11", "--dataset", "smap", "--shard", "0/1"]
    out = CliRunner().invoke(cf.main, sharded)
    assert out.exit_code == 0, out.output
    assert f"| always | SMAP | 2 | {scored:,} | {2000 / scored:.2f} |" in out.output
    assert "episodes on cross-fitted train" in out.output

    # The counts can be recorded, a shard's too, and read back as the replay counted them.
    from stream_detector.evaluation.replay_counts import load_counts

    record = d11_cache.parent / "counts.json"
    one = [*args, "--channel", "D-11", "--dataset", "smap", "--save-counts", str(record)]
    for shard in ([], ["--shard", "0/1"]):
        out = CliRunner().invoke(cf.main, [*one, *shard])
        assert out.exit_code == 0, out.output
        recorded, left_out, stream = load_counts([record])
        assert recorded == {"always": {"SMAP": ReplayCount(2, scored)}}
        assert left_out == [] and stream == "cross-fitted train"
        stamped = json.loads(record.read_text())
        assert stamped["recipe"]["fold_epochs"] is None and "--channel D-11" in stamped["source"]
        assert stamped["shard"] == (shard[1] if shard else None)

    # Folds of another recipe are refused by name, not mixed in.
    (d11_cache / "crossfit" / "recipe.json").write_text('{"kind": "other"}\n')
    refused = CliRunner().invoke(cf.main, [*args, "--channel", "D-11", "--dataset", "smap"])
    assert refused.exit_code != 0 and "caches scores of another recipe" in refused.output


def test_fold_epochs_caps_the_fold_models_training_and_keeps_them_apart(d11_cache):
    from click.testing import CliRunner

    from stream_detector.training.checkpoint import load_checkpoint

    recipe = cf.cache_recipe(d11_cache)
    capped = cf.fold_recipe(recipe, 2)
    assert capped.fit.epochs == 2 and recipe.fit.epochs == 1  # the cache's recipe is untouched
    assert capped.describe() == {**recipe.describe(), "fit": {**recipe.fit.to_dict(), "epochs": 2}}
    assert cf.fold_recipe(recipe) is recipe
    assert cf.fold_folder(d11_cache, 2) == d11_cache / "crossfit-epochs2"

    grid = d11_cache.parent / "grid.json"
    grid.write_text(
        '[{"name": "always", "threshold": {"kind": "fixed", "params": {"value": 1e-12}}}]'
    )
    args = ["--cache", str(d11_cache), "--thresholds", str(grid), "--data-root", str(DATA)]
    args += ["--channel", "D-11", "--dataset", "smap"]
    out = CliRunner().invoke(cf.main, [*args, "--fold-epochs", "2"])
    assert out.exit_code == 0, out.output
    folder = d11_cache / "crossfit-epochs2"
    stamped = json.loads((folder / "recipe.json").read_text())
    assert stamped == json.loads(json.dumps(capped.describe()))
    for index in range(cf.FOLDS):
        fit = load_checkpoint(folder / f"D-11.fold{index}.pt", device="cpu").fit
        assert fit["config"]["epochs"] == 2 and fit["history"]["epochs"] == 2
    # The uncapped folds' folder is neither written nor read.
    assert not (d11_cache / "crossfit").exists()

    refused = CliRunner().invoke(cf.main, [*args, "--fold-epochs", "0"])
    assert refused.exit_code != 0 and "--fold-epochs" in refused.output


@pytest.mark.parametrize("module", ["crossfit_replay", "train_replay"])
def test_the_replays_hold_torch_to_the_settings_threads(module, tmp_path, monkeypatch):
    # Run as N processes side by side, each left at torch's default thread count
    # oversubscribed two cores: an epoch took 5 to 220 s instead of about 2.
    import importlib

    import torch
    from click.testing import CliRunner

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setenv("SD_MODEL__TORCH_THREADS", "1")
    grid = tmp_path / "grid.json"
    grid.write_text('[{"name": "always", "threshold": {"kind": "fixed", "params": {"value": 1}}}]')
    not_a_cache = tmp_path / "empty"
    not_a_cache.mkdir()
    args = ["--cache", str(not_a_cache), "--thresholds", str(grid), "--data-root", str(DATA)]
    out = CliRunner().invoke(
        importlib.import_module(f"stream_detector.evaluation.{module}").main,
        [*args, "--channel", "D-11", "--dataset", "smap"],
    )
    assert out.exit_code != 0  # nothing to replay: the threads were set before that was found
    assert calls == [1]


def test_rule_v5_reads_its_quiet_half_from_the_cross_fitted_train():
    from stream_detector.evaluation import threshold_grid
    from tests.unit.test_threshold_grid import _result

    both = [("SMAP", 0), ("MSL", 0)]
    results = {
        # Finds one of the two injected anomalies, quiet on the held-out part.
        "incumbent": _result(both, [(10, 19), None]),
        # Finds both, and raises a held-out false episode on MSL (0.1 per 1k, above v4's
        # 0.05): v4 leaves it out, v5 asks the cross-fitted train instead.
        "finds more": _result([("SMAP", 0), ("MSL", 1)], [(10, 19), (10, 19)]),
        # Finds both too, quiet on the held-out part, but noisier than the incumbent on
        # SMAP's cross-fitted train: v5 leaves it out, v4 picks it.
        "noisy elsewhere": _result(both, [(10, 19), (10, 19)]),
        "oracle": _result(both, [(10, 19), (10, 19)], oracle=True),
    }
    counts = {
        "incumbent": {"SMAP": ReplayCount(4, 1000), "MSL": ReplayCount(4, 1000)},
        "finds more": {"SMAP": ReplayCount(4, 1000), "MSL": ReplayCount(3, 1000)},  # ≤ on both
        "noisy elsewhere": {"SMAP": ReplayCount(5, 1000), "MSL": ReplayCount(1, 1000)},
        "oracle": {"SMAP": ReplayCount(0, 1000), "MSL": ReplayCount(0, 1000)},
    }
    quiet = cf.no_noisier_than(counts, "incumbent")
    assert [n for n in results if quiet(n)] == ["incumbent", "finds more", "oracle"]
    assert not quiet("never replayed")
    assert threshold_grid.label_free_choice(results, tie_break_composite=True) == (
        "noisy elsewhere"
    )
    assert (
        threshold_grid.label_free_choice(results, tie_break_composite=True, quiet=quiet)
        == "finds more"
    )
    text = cf.decision_lines(counts, results, "incumbent")
    # The oracle passes the filter but is never a candidate, and is not counted.
    assert "2 variants raise no more episodes" in text
    assert "the pick `finds more`" in text
    with pytest.raises(ValueError, match="was not replayed"):
        cf.no_noisier_than(counts, "gone")
    msl_only = {n: {"MSL": c["MSL"]} for n, c in counts.items()}
    with pytest.raises(ValueError, match="every data set the grid judges"):
        cf.decision_lines(msl_only, results, "incumbent")


def test_decide_needs_a_grid_to_judge(tmp_path):
    from click.testing import CliRunner

    grid = tmp_path / "grid.json"
    grid.write_text('[{"name": "always", "threshold": {"kind": "fixed", "params": {"value": 1}}}]')
    args = ["--cache", str(tmp_path), "--thresholds", str(grid), "--decide"]
    out = CliRunner().invoke(cf.main, args)
    assert out.exit_code == 2 and "--against" in out.output
