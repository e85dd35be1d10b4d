"""The `ensemble` detector, its checkpoints combined from members, and its score caches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stream_detector.evaluation.ensemble_cache import combine_caches, ensemble_recipe
from stream_detector.evaluation.runner import ModelRecipe, held_out_start
from stream_detector.evaluation.threshold_grid import ScoreCache
from stream_detector.models import FitConfig, build_detector
from stream_detector.models.ensemble import DEFAULT_MEMBERS, ScoreEnsemble
from stream_detector.training import load_checkpoint, save_checkpoint, train_on_series
from stream_detector.training.checkpoint import Checkpoint
from stream_detector.training.ensemble import combine_checkpoints
from stream_detector.training.scaler import StandardScaler
from stream_detector.training.trainer import Split

WINDOW = 16
SMALL: list[dict[str, Any]] = [
    {"kind": "lstm_dt", "hyperparameters": {"hidden": [6], "n_predictions": 1}},
    {"kind": "lstm_dt", "hyperparameters": {"hidden": [5, 4], "n_predictions": 3}},
]
FIT = FitConfig(epochs=3, patience=2, batch_size=16, device="cpu", seed=7)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def series(length: int = 260, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    value = 0.5 * np.sin(2 * np.pi * t / 25) + rng.normal(0, 0.05, length)
    flag = (t % 41 == 0).astype(float)
    return np.stack([value, flag], axis=1).astype(np.float32)


def train(
    kind: str,
    hyperparameters: dict[str, Any],
    data: np.ndarray,
    split: Split = "chronological",
    fit: FitConfig = FIT,
) -> Checkpoint:
    return train_on_series(
        kind,
        [data],
        window=WINDOW,
        channels=["X-1"],
        dataset="synthetic",
        hyperparameters=hyperparameters,
        fit_config=fit,
        train_stride=2,
        scaling="none",
        progress=False,
        split=split,
    )


def windows_of(data: np.ndarray) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(data, WINDOW, axis=0)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))


def ensemble_and_members(
    specs: list[dict[str, Any]], **hyperparameters: Any
) -> tuple[Checkpoint, list[Checkpoint]]:
    """The ensemble of `specs` trained by `train`, and its members trained one by one."""
    data = series()
    ensemble = train("ensemble", {"members": specs, **hyperparameters}, data)
    members = [train(spec["kind"], spec["hyperparameters"], data) for spec in specs]
    return ensemble, members


@pytest.fixture(scope="module")
def trained() -> tuple[Checkpoint, list[Checkpoint]]:
    """The ensemble trained by `train`, and its two members trained one by one."""
    return ensemble_and_members(SMALL)


def test_each_member_is_trained_exactly_as_it_would_be_alone(
    trained: tuple[Checkpoint, list[Checkpoint]],
) -> None:
    ensemble, members = trained
    detector = ensemble.detector
    assert isinstance(detector, ScoreEnsemble)
    for inside, alone in zip(detector.members, members, strict=True):
        weights, expected = inside.state_dict(), alone.detector.state_dict()
        assert weights.keys() == expected.keys()
        for name in weights:
            assert torch.equal(weights[name], expected[name]), name
    # One summary entry: the members' mean validation loss at their own best epochs.
    best = [min(m.fit["history"]["val_loss"]) for m in members]
    assert ensemble.fit["history"]["val_loss"] == pytest.approx([np.mean(best)])
    assert len(ensemble.fit["history"]["members"]) == 2


def test_an_ensemble_scores_the_mean_of_its_members(
    trained: tuple[Checkpoint, list[Checkpoint]],
) -> None:
    ensemble, members = trained
    windows = windows_of(series(seed=3))
    expected = (members[0].score_raw(windows) + members[1].score_raw(windows)) / 2
    np.testing.assert_allclose(ensemble.score_raw(windows), expected, rtol=1e-6)


def test_combined_checkpoints_are_the_ensemble_train_makes(
    trained: tuple[Checkpoint, list[Checkpoint]], tmp_path: Path
) -> None:
    ensemble, members = trained
    combined = combine_checkpoints(members, [series()])
    assert combined.model_version == ensemble.model_version
    assert combined.calibration.quantiles == pytest.approx(ensemble.calibration.quantiles)
    assert combined.calibration.tail == pytest.approx(ensemble.calibration.tail)
    # And it survives a save and a load, weights, members and all.
    loaded = load_checkpoint(save_checkpoint(combined, tmp_path / "e.pt"), device="cpu")
    assert loaded.model_version == combined.model_version
    assert loaded.detector.hyperparameters == combined.detector.hyperparameters


def test_members_split_shuffled_combine_into_the_ensemble_train_makes() -> None:
    """A shuffled split's members make the ensemble `train` makes, and it says it was split so;
    members split differently are not one ensemble."""
    data = series()
    ensemble = train("ensemble", {"members": SMALL}, data, split="shuffled")
    members = [
        train(spec["kind"], spec["hyperparameters"], data, split="shuffled") for spec in SMALL
    ]
    combined = combine_checkpoints(members, [data])
    assert combined.model_version == ensemble.model_version
    assert combined.calibration.quantiles == pytest.approx(ensemble.calibration.quantiles)
    assert combined.calibration.tail == pytest.approx(ensemble.calibration.tail)
    assert combined.fit["split"] == "shuffled"
    chronological = train(SMALL[1]["kind"], SMALL[1]["hyperparameters"], data)
    with pytest.raises(ValueError, match="another split"):
        combine_checkpoints([members[0], chronological], [data])


def test_an_ensemble_of_seeds_holds_the_members_each_seed_trains_alone() -> None:
    """One recipe under the fit seed and under the fit seed + 1: trained as one ensemble, or
    alone and combined, the same members and the same calibration."""
    spec = SMALL[0]
    seeds = [spec, {**spec, "seed": 1}]
    data = series()
    ensemble = train("ensemble", {"members": seeds}, data)
    alone = [
        train(spec["kind"], spec["hyperparameters"], data, fit=dataclasses.replace(FIT, seed=s))
        for s in (FIT.seed, FIT.seed + 1)
    ]
    detector = ensemble.detector
    assert isinstance(detector, ScoreEnsemble)
    for inside, member in zip(detector.members, alone, strict=True):
        weights, expected = inside.state_dict(), member.detector.state_dict()
        for name in weights:
            assert torch.equal(weights[name], expected[name]), name
    first, second = (m.state_dict() for m in detector.members)
    assert any(not torch.equal(first[name], second[name]) for name in first)
    described = detector.hyperparameters["members"]
    assert "seed" not in described[0] and described[1]["seed"] == 1

    combined = combine_checkpoints(alone, [data])
    assert combined.model_version == ensemble.model_version
    assert combined.calibration.quantiles == pytest.approx(ensemble.calibration.quantiles)
    assert combined.fit["config"]["seed"] == FIT.seed

    shuffled = [
        train(
            spec["kind"],
            spec["hyperparameters"],
            data,
            "shuffled",
            dataclasses.replace(FIT, seed=s),
        )
        for s in (FIT.seed, FIT.seed + 1)
    ]
    with pytest.raises(ValueError, match="only when split chronologically"):
        combine_checkpoints(shuffled, [data])


def test_members_trained_differently_are_refused(
    trained: tuple[Checkpoint, list[Checkpoint]],
) -> None:
    _, members = trained
    other_budget = train_on_series(
        "lstm_dt",
        [series()],
        window=WINDOW,
        channels=["X-1"],
        dataset="synthetic",
        hyperparameters={"hidden": [6]},
        fit_config=FitConfig(epochs=1, batch_size=16, device="cpu", seed=8),
        train_stride=2,
        scaling="none",
        progress=False,
    )
    with pytest.raises(ValueError, match="another config"):
        combine_checkpoints([members[0], other_budget], [series()])
    rescaled = Checkpoint(**{**members[1].__dict__, "scaler": StandardScaler.fit(series())})
    with pytest.raises(ValueError, match="another scaler"):
        combine_checkpoints([members[0], rescaled], [series()])
    with pytest.raises(ValueError, match="at least two"):
        combine_checkpoints(members[:1], [series()])


def test_bad_member_lists_fail_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least two"):
        build_detector("ensemble", WINDOW, 2, members=SMALL[:1])
    with pytest.raises(ValueError, match="ensemble as a member"):
        build_detector("ensemble", WINDOW, 2, members=[SMALL[0], {"kind": "ensemble"}])
    with pytest.raises(KeyError, match="unknown detector kind"):
        build_detector("ensemble", WINDOW, 2, members=[SMALL[0], {"kind": "nope"}])
    with pytest.raises(ValueError, match="'kind'"):
        build_detector("ensemble", WINDOW, 2, members=[SMALL[0], "lstm_dt"])
    with pytest.raises(ValueError, match="integer offset"):
        build_detector("ensemble", WINDOW, 2, members=[SMALL[0], {**SMALL[1], "seed": "1"}])


def test_the_default_members_are_the_races_pick_and_take_the_scored_columns() -> None:
    detector = build_detector("ensemble", 251, 25, score_features=[0])
    members = detector.hyperparameters["members"]
    assert [m["kind"] for m in members] == ["lstm_dt", "lstm_dt"]
    assert [m["hyperparameters"]["n_predictions"] for m in members] == [1, 10]
    assert [m["hyperparameters"]["scored_prediction"] for m in members] == ["first", "first"]
    assert all(m["hyperparameters"]["score_features"] == [0] for m in members)
    assert DEFAULT_MEMBERS[0]["hyperparameters"] == {"n_predictions": 1}


def _write_cache(
    folder: Path, kind: str, hyperparameters: dict[str, Any], ckpt: Checkpoint
) -> None:
    recipe = ModelRecipe(kind, WINDOW, hyperparameters, FIT, train_stride=2, scaling="none")
    cache = ScoreCache(folder, recipe)
    save_checkpoint(ckpt, cache.folder / "X-1.pt")


def test_two_member_caches_combine_into_a_cache_stamped_as_evaluate_stamps_it(
    trained: tuple[Checkpoint, list[Checkpoint]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ensemble, members = trained
    folders = [tmp_path / "one", tmp_path / "two"]
    for folder, spec, member in zip(folders, SMALL, members, strict=True):
        _write_cache(folder, "lstm_dt", {**spec["hyperparameters"], "score_features": [0]}, member)
    monkeypatch.setattr(
        "stream_detector.evaluation.ensemble_cache.load_series", lambda root, chan, split: series()
    )
    assert combine_caches(folders, tmp_path / "ens", tmp_path, progress=False) == ["X-1"]
    # Not the default members: the stamp names them, as `--hp members=...` would.
    wanted = ModelRecipe(
        "ensemble",
        WINDOW,
        {"members": SMALL, "score_features": [0]},
        FIT,
        train_stride=2,
        scaling="none",
    )
    stamp = json.loads((tmp_path / "ens" / "recipe.json").read_text())
    assert stamp == json.loads(json.dumps(wanted.describe()))
    # A checkpoint without scores is loaded to be scored, never retrained.
    loaded = ScoreCache(tmp_path / "ens", wanted).load("X-1")
    assert loaded is not None
    assert loaded[0].model_version == ensemble.model_version
    assert loaded[1] == {}
    # A second run leaves what is there.
    assert combine_caches(folders, tmp_path / "ens", tmp_path, progress=False) == []


def test_member_caches_fitted_before_the_held_out_part_are_calibrated_on_that_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = series()
    fitted = whole[: held_out_start(len(whole))]
    ensemble = train("ensemble", {"members": SMALL}, fitted)
    folders = [tmp_path / "one", tmp_path / "two"]
    for folder, spec in zip(folders, SMALL, strict=True):
        member = train(spec["kind"], spec["hyperparameters"], fitted)
        recipe = ModelRecipe(
            "lstm_dt",
            WINDOW,
            {**spec["hyperparameters"], "score_features": [0]},
            FIT,
            train_stride=2,
            scaling="none",
            fit_part="before_held_out",
        )
        save_checkpoint(member, ScoreCache(folder, recipe).folder / "X-1.pt")
    monkeypatch.setattr(
        "stream_detector.evaluation.ensemble_cache.load_series", lambda root, chan, split: whole
    )
    assert combine_caches(folders, tmp_path / "ens", tmp_path, progress=False) == ["X-1"]
    combined = load_checkpoint(tmp_path / "ens" / "X-1.pt", device="cpu")
    assert combined.model_version == ensemble.model_version
    assert combined.calibration.quantiles == pytest.approx(ensemble.calibration.quantiles)
    assert json.loads((tmp_path / "ens" / "recipe.json").read_text())["fit_part"] == (
        "before_held_out"
    )


def test_the_default_members_caches_get_the_stamp_of_evaluate_model_ensemble() -> None:
    common = {"window": 251, "fit": FIT.to_dict(), "train_stride": 2, "scaling": "none"}
    recipes = [
        {**common, "kind": "lstm_dt", "hyperparameters": {"score_features": [0]}},
        {
            **common,
            "kind": "lstm_dt",
            "hyperparameters": {"n_predictions": 10, "score_features": [0]},
        },
    ]
    recipe = ensemble_recipe(recipes)
    assert recipe.kind == "ensemble"
    assert recipe.hyperparameters == {"score_features": [0]}
    with pytest.raises(ValueError, match="another window"):
        ensemble_recipe([recipes[0], {**recipes[1], "window": 100}])
    # The same member under another seed: an ensemble of seeds, the offset in its spec.
    reseeded = {**recipes[0], "fit": {**recipes[0]["fit"], "seed": FIT.seed + 2}}
    seeds = ensemble_recipe([recipes[0], reseeded])
    assert seeds.fit == FIT
    assert [m.get("seed", 0) for m in seeds.hyperparameters["members"]] == [0, 2]
    with pytest.raises(ValueError, match="only when split chronologically"):
        ensemble_recipe([{**recipes[0], "split": "shuffled"}, {**reseeded, "split": "shuffled"}])


SMAP_MSL_ROOT = Path("/work/shared/datasets/smap_msl")


@pytest.mark.skipif(not SMAP_MSL_ROOT.is_dir(), reason="SMAP/MSL data not present")
def test_the_combine_command_makes_an_ensemble_checkpoint_and_names_what_differs(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from stream_detector.cli import main
    from stream_detector.training import train_on_dataset

    paths = []
    for name, chan, spec in (
        ("a", "D-12", SMALL[0]),
        ("b", "D-12", SMALL[1]),
        ("c", "A-6", SMALL[1]),
    ):
        ckpt = train_on_dataset(
            SMAP_MSL_ROOT,
            [chan],
            "lstm_dt",
            window=WINDOW,
            hyperparameters=spec["hyperparameters"],
            fit_config=FitConfig(epochs=1, batch_size=64, device="cpu"),
            scaling="none",
            progress=False,
        )
        paths.append(str(save_checkpoint(ckpt, tmp_path / f"{name}.pt")))
    out = tmp_path / "e.pt"
    args = ["combine", paths[0], paths[1], "--out", str(out), "--data-root", str(SMAP_MSL_ROOT)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "model=ensemble" in result.output
    loaded = load_checkpoint(out, device="cpu")
    assert loaded.detector.kind == "ensemble"
    assert loaded.channels == ["D-12"]
    refused = CliRunner().invoke(main, [*args[:2], paths[2], *args[3:]])
    assert refused.exit_code != 0
    assert "differs from member 0 in channels" in refused.output


@pytest.mark.skipif(not SMAP_MSL_ROOT.is_dir(), reason="SMAP/MSL data not present")
def test_train_model_ensemble_takes_its_members_recipe(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stream_detector.cli import main

    out = tmp_path / "ensemble.pt"
    result = CliRunner().invoke(
        main,
        [
            "train", "--channel", "D-12", "--model", "ensemble", "--window", str(WINDOW),
            "--epochs", "1", "--hp", f"members={json.dumps(SMALL)}",
            "--data-root", str(SMAP_MSL_ROOT), "--out", str(out), "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loaded = load_checkpoint(out, device="cpu")
    assert loaded.detector.kind == "ensemble"
    assert loaded.fit["scaling"] == "none"  # the ensemble's recipe defaults are lstm_dt's


# The forty-second look's ensemble: a predictor and the analogues, an "and" of their errors.
MIXED: list[dict[str, Any]] = [
    {"kind": "lstm_dt", "hyperparameters": {"hidden": [6], "n_predictions": 2}},
    {"kind": "knn_dt", "hyperparameters": {}},
]


def stub_scores(ensemble: ScoreEnsemble, parts: list[np.ndarray]) -> None:
    """Each member scores ``parts[i]`` whatever the windows."""
    for member, part in zip(ensemble.members, parts, strict=True):
        member.score = lambda w, part=part: part  # type: ignore[method-assign]


def test_the_geometric_mean_is_the_nth_root_of_the_members_product() -> None:
    ensemble = ScoreEnsemble(WINDOW, 2, members=MIXED, combine="geometric")
    windows = windows_of(series(length=WINDOW + 2))
    parts = [np.array([4.0, 0.0, 2.0], np.float32), np.array([9.0, 5.0, 8.0], np.float32)]
    stub_scores(ensemble, parts)
    # sqrt(4·9) = 6; a member that predicts a step exactly silences it; sqrt(2·8) = 4.
    np.testing.assert_allclose(ensemble.score(windows), [6.0, 0.0, 4.0], rtol=1e-6)
    three = ScoreEnsemble(WINDOW, 2, members=[*MIXED, MIXED[1]], combine="geometric")
    stub_scores(three, [*parts, np.float32([6, 1, 0.5])])
    np.testing.assert_allclose(three.score(windows), [6.0, 0.0, 2.0], rtol=1e-6)
    mean = ScoreEnsemble(WINDOW, 2, members=MIXED)
    stub_scores(mean, parts)
    np.testing.assert_allclose(mean.score(windows), [6.5, 2.5, 5.0], rtol=1e-6)


def test_the_combination_is_a_hyperparameter_that_rebuilds_and_is_checked() -> None:
    geometric = ScoreEnsemble(WINDOW, 2, members=MIXED, combine="geometric")
    assert geometric.hyperparameters["combine"] == "geometric"
    rebuilt = build_detector("ensemble", WINDOW, 2, **geometric.hyperparameters)
    assert isinstance(rebuilt, ScoreEnsemble)
    assert rebuilt.combine == "geometric"
    assert [m.kind for m in rebuilt.members] == ["lstm_dt", "knn_dt"]
    # The mean is left out, so ensembles made before the choice keep their version.
    assert "combine" not in ScoreEnsemble(WINDOW, 2, members=MIXED).hyperparameters
    with pytest.raises(ValueError, match="combine must be one of mean, geometric, gated"):
        ScoreEnsemble(WINDOW, 2, members=MIXED, combine="median")
    signed = [MIXED[0], {"kind": "beatgan", "hyperparameters": {}}]
    with pytest.raises(ValueError, match="never negative; beatgan may score below zero"):
        ScoreEnsemble(WINDOW, 2, members=signed, combine="geometric")
    ScoreEnsemble(WINDOW, 2, members=signed)  # the mean takes any member


def test_the_cli_offers_the_ensembles_combinations() -> None:
    from stream_detector.cli import combine
    from stream_detector.models.ensemble import COMBINATIONS

    option = next(p for p in combine.params if p.name == "combination")
    assert tuple(option.type.choices) == COMBINATIONS  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def mixed() -> tuple[Checkpoint, list[Checkpoint]]:
    """A geometric ensemble of a predictor and the analogues trained by `train`, and its two
    members trained one by one with the same recipe."""
    return ensemble_and_members(MIXED, combine="geometric")


def test_a_geometric_ensemble_of_two_kinds_is_what_train_makes(
    mixed: tuple[Checkpoint, list[Checkpoint]],
) -> None:
    ensemble, members = mixed
    windows = windows_of(series(seed=3))
    scores = [m.score_raw(windows).astype(np.float64) for m in members]
    assert min(scores[1]) >= 0 and max(scores[1]) > 0
    np.testing.assert_allclose(
        ensemble.score_raw(windows), np.sqrt(scores[0] * scores[1]), rtol=1e-5
    )
    combined = combine_checkpoints(members, [series()], "geometric")
    assert combined.model_version == ensemble.model_version
    assert combined.calibration.quantiles == pytest.approx(ensemble.calibration.quantiles)
    # The mean of the same members is another model.
    assert combine_checkpoints(members, [series()]).model_version != ensemble.model_version


def test_member_caches_with_fold_models_combine_both(
    mixed: tuple[Checkpoint, list[Checkpoint]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_detector.evaluation.crossfit_replay import fold_halves, fold_store

    _, members = mixed
    whole = series(length=4 * WINDOW + 7)
    halves = fold_halves(whole, WINDOW)
    assert halves is not None
    folders = [tmp_path / "lstm", tmp_path / "knn"]
    fold_members: list[list[Checkpoint]] = []
    for folder, spec, member in zip(folders, MIXED, members, strict=True):
        _write_cache(
            folder, spec["kind"], {**spec["hyperparameters"], "score_features": [0]}, member
        )
        recipe, store = fold_store(folder)
        folds = [train(spec["kind"], spec["hyperparameters"], half) for half in halves]
        for index, fold in enumerate(folds):
            save_checkpoint(fold, store.folder / f"X-1.fold{index}.pt")
        fold_members.append(folds)
    monkeypatch.setattr(
        "stream_detector.evaluation.ensemble_cache.load_series", lambda root, chan, split: whole
    )
    out = tmp_path / "geo"
    written = combine_caches(folders, out, tmp_path, progress=False, combine="geometric")
    assert written == ["X-1", "X-1.fold0", "X-1.fold1"]
    stamp = json.loads((out / "recipe.json").read_text())
    assert stamp["hyperparameters"] == {
        "members": MIXED,
        "combine": "geometric",
        "score_features": [0],
    }
    # crossfit_replay finds the fold models under the ensemble's own recipe: no retraining.
    recipe, store = fold_store(out)
    assert recipe.kind == "ensemble"
    for index, half in enumerate(halves):
        loaded = store.load(f"X-1.fold{index}")
        assert loaded is not None
        expected = combine_checkpoints([m[index] for m in fold_members], [half], "geometric")
        assert loaded[0].model_version == expected.model_version
        assert loaded[0].calibration.quantiles == pytest.approx(expected.calibration.quantiles)
    # Without fold models in every member, only the channels are combined.
    for path in (folders[1] / "crossfit").glob("*.pt"):
        path.unlink()
    again = combine_caches(
        folders, tmp_path / "geo2", tmp_path, progress=False, combine="geometric"
    )
    assert again == ["X-1"]


def test_a_gated_ensemble_counts_a_member_where_its_validation_median_is_above_zero() -> None:
    windows = windows_of(series(length=WINDOW + 2))
    gated = ScoreEnsemble(WINDOW, 2, members=MIXED, combine="gated")
    # The analogues' median on these windows is 0 (two of three exact): left out.
    stub_scores(gated, [np.float32([4, 1, 2]), np.float32([0, 0, 8])])
    gated.choose_members(windows)
    assert gated.gate.tolist() == [True, False]
    np.testing.assert_allclose(gated.score(windows), [4.0, 1.0, 2.0], rtol=1e-6)
    # A median above 0: the geometric mean of both, sqrt(4·9) = 6, a 0 still silences.
    stub_scores(gated, [np.float32([4, 1, 2]), np.float32([9, 0, 8])])
    gated.choose_members(windows)
    assert gated.gate.tolist() == [True, True]
    np.testing.assert_allclose(gated.score(windows), [6.0, 0.0, 4.0], rtol=1e-6)
    # The first member counts whatever its own median: it is the detector the others gate on.
    stub_scores(gated, [np.float32([0, 0, 2]), np.float32([0, 0, 8])])
    gated.choose_members(windows)
    assert gated.gate.tolist() == [True, False]
    with pytest.raises(ValueError, match="validation windows and there are none"):
        gated.choose_members(windows[:0])
    with pytest.raises(ValueError, match="validation windows and there are none"):
        gated.choose_members(None)
    signed = [MIXED[0], {"kind": "beatgan", "hyperparameters": {}}]
    with pytest.raises(ValueError, match="combine='gated' needs members whose scores are never"):
        ScoreEnsemble(WINDOW, 2, members=signed, combine="gated")
    # Other combinations have nothing to choose: every member counts.
    geometric = ScoreEnsemble(WINDOW, 2, members=MIXED, combine="geometric")
    stub_scores(geometric, [np.float32([4, 1, 2]), np.float32([0, 0, 8])])
    geometric.choose_members(windows)
    assert geometric.gate.tolist() == [True, True]


def test_the_gate_is_kept_with_the_weights() -> None:
    # Two predictors: an unfitted one has weights to round-trip (the analogues have none yet).
    gated = ScoreEnsemble(WINDOW, 2, members=SMALL, combine="gated")
    gated.gate = np.array([True, False])
    state = gated.state_dict()
    assert state["gate"].tolist() == [True, False]
    rebuilt = build_detector("ensemble", WINDOW, 2, **gated.hyperparameters)
    assert isinstance(rebuilt, ScoreEnsemble)
    assert rebuilt.gate.tolist() == [True, True]
    rebuilt.load_state_dict(state)
    assert rebuilt.gate.tolist() == [True, False]
    assert "gate" not in ScoreEnsemble(WINDOW, 2, members=SMALL, combine="geometric").state_dict()
    with pytest.raises(RuntimeError, match="combine='gated', gate absent"):
        rebuilt.load_state_dict({k: v for k, v in state.items() if k != "gate"})
    geometric = ScoreEnsemble(WINDOW, 2, members=SMALL, combine="geometric")
    with pytest.raises(RuntimeError, match="combine='geometric', gate present"):
        geometric.load_state_dict(state)
    with pytest.raises(RuntimeError, match="must keep the first of 2 members"):
        rebuilt.load_state_dict({**state, "gate": torch.tensor([False, True])})


def repeating(length: int = 260) -> np.ndarray:
    """Telemetry that repeats itself exactly (four levels, period 25): the analogues predict
    it without error, a network does not."""
    t = np.arange(length)
    value = np.round(2 * np.sin(2 * np.pi * t / 25)) / 2
    return np.stack([value, np.zeros(length)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("data", "counted"),
    [(series(), [True, True]), (repeating(), [True, False])],
    ids=["noisy", "repeating"],
)
def test_a_gated_ensemble_is_what_train_makes_and_chooses_on_validation(
    data: np.ndarray, counted: list[bool], tmp_path: Path
) -> None:
    ensemble = train("ensemble", {"members": MIXED, "combine": "gated"}, data)
    members = [train(spec["kind"], spec["hyperparameters"], data) for spec in MIXED]
    combined = combine_checkpoints(members, [data], "gated")
    assert combined.model_version == ensemble.model_version
    assert combined.calibration.quantiles == pytest.approx(ensemble.calibration.quantiles)
    save_checkpoint(combined, tmp_path / "gated.pt")
    reloaded = load_checkpoint(tmp_path / "gated.pt", device="cpu")
    assert reloaded.model_version == ensemble.model_version
    for checkpoint in (ensemble, reloaded):
        assert isinstance(checkpoint.detector, ScoreEnsemble)
        assert checkpoint.detector.gate.tolist() == counted
    windows = windows_of(data)
    scores = [m.score_raw(windows).astype(np.float64) for m in members]
    # Where the analogues' validation error is 0 the predictor scores alone.
    expected = np.sqrt(scores[0] * scores[1]) if counted[1] else scores[0]
    np.testing.assert_allclose(reloaded.score_raw(windows), expected, rtol=1e-5)
    assert combine_checkpoints(members, [data], "geometric").model_version != (
        ensemble.model_version
    )
