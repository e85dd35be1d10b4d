"""An ensemble's score cache assembled from its members' score caches, without retraining.

`evaluate --model ensemble --score-cache DIR` trains every member of every channel. When the
members' own caches exist (one `evaluate --model lstm_dt --hp ...` each, same recipe
otherwise), their checkpoints are the members that training would make (see
``training.ensemble``), so the ensemble's cache is their combination: one ensemble checkpoint
per channel, calibrated on its own train scores, and a recipe stamp that is the one
`evaluate --model ensemble` writes. Its scores are computed on first use, as for any cache.

The members' fold models (`crossfit_replay`'s ``crossfit/``) are combined the same way when
every member has them, each calibrated on the half it was trained on: they are the fold
models `crossfit_replay` would train for the ensemble's recipe.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from stream_detector.data.smap_msl import load_series
from stream_detector.evaluation.crossfit_replay import fold_folder, fold_halves
from stream_detector.evaluation.runner import ModelRecipe
from stream_detector.evaluation.threshold_grid import ScoreCache
from stream_detector.models.base import accepted_hyperparameters, get_detector_class
from stream_detector.models.ensemble import DEFAULT_MEMBERS, checked_combination
from stream_detector.training.checkpoint import load_checkpoint, save_checkpoint
from stream_detector.training.ensemble import combine_checkpoints, seed_offsets, without_seed

__all__ = ["combine_caches", "ensemble_recipe"]


def _read_recipe(folder: Path) -> dict[str, Any]:
    stamp = folder / "recipe.json"
    if not stamp.is_file():
        raise ValueError(f"{folder} is not a score cache: it has no recipe.json")
    recipe: dict[str, Any] = json.loads(stamp.read_text())
    return recipe


def _with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A member spec with every constructor default filled in, for comparing specs."""
    init = inspect.signature(get_detector_class(spec["kind"]).__init__).parameters
    accepted = set(accepted_hyperparameters(spec["kind"])) - {"score_features"}
    defaults = {name: param.default for name, param in init.items() if name in accepted}
    return {
        "kind": spec["kind"],
        "hyperparameters": {**defaults, **spec["hyperparameters"]},
        "seed": spec.get("seed", 0),
    }


def ensemble_recipe(member_recipes: list[dict[str, Any]], combine: str = "mean") -> ModelRecipe:
    """The recipe `evaluate --model ensemble` would stamp for these members' recipes,
    combined by ``combine``."""
    checked_combination(combine)  # before any stamp is written with it
    first = member_recipes[0]
    shared = ("window", "fit", "train_stride", "scaling", "split", "fit_part")
    for index, other in enumerate(member_recipes[1:], start=1):
        for name in shared:
            mine, theirs = other.get(name), first.get(name)
            if name == "fit":  # an ensemble of seeds: each member keeps its own as an offset
                mine, theirs = without_seed(mine), without_seed(theirs)
            if mine != theirs:
                raise ValueError(f"member cache {index} was made with another {name} than cache 0")
    offsets = seed_offsets(
        [int(r["fit"]["seed"]) for r in member_recipes], first.get("split", "chronological")
    )
    features = {json.dumps(r["hyperparameters"].get("score_features")) for r in member_recipes}
    if len(features) != 1:
        raise ValueError("the member caches score different columns (score_features)")
    specs = [
        {
            "kind": r["kind"],
            "hyperparameters": {
                k: v for k, v in r["hyperparameters"].items() if k != "score_features"
            },
            **({"seed": offset} if offset else {}),
        }
        for r, offset in zip(member_recipes, offsets, strict=True)
    ]
    hyperparameters: dict[str, Any] = {}
    if [_with_defaults(spec) for spec in specs] != [_with_defaults(m) for m in DEFAULT_MEMBERS]:
        # `--hp members=...` on the command line puts them in the recipe; the default does not.
        hyperparameters["members"] = specs
    if combine != "mean":  # as `--hp combine=...` puts it in the recipe; the mean is the default
        hyperparameters["combine"] = combine
    score_features = member_recipes[0]["hyperparameters"].get("score_features")
    if score_features is not None:
        hyperparameters["score_features"] = score_features
    return ModelRecipe.from_description(
        {**first, "kind": "ensemble", "hyperparameters": hyperparameters}
    )


def combine_caches(
    members: list[Path], out: Path, root: Path, progress: bool = True, combine: str = "mean"
) -> list[str]:
    """Write the ensemble checkpoint of every channel all ``members`` caches hold into ``out``,
    and of every fold model they all hold (their ``crossfit/``) into ``out/crossfit``.

    Entries already in ``out`` are kept. Returns the entries written (``A-1``, ``A-1.fold0``).
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two member caches, got {len(members)}")
    recipe = ensemble_recipe([_read_recipe(folder) for folder in members], combine)
    cache = ScoreCache(out, recipe)  # checks or writes the stamp
    # Fold models are trained on a whole half with the cache's own recipe (`fold_store`).
    folds = [fold_folder(folder) for folder in members]
    fold_cache = ScoreCache(fold_folder(out), recipe) if all(f.is_dir() for f in folds) else None
    jobs: list[tuple[str, list[Path], ScoreCache]] = [
        (name, members, cache) for name in _common_checkpoints(members)
    ]
    if fold_cache is not None:
        jobs += [(name, folds, fold_cache) for name in _common_checkpoints(folds)]
    jobs.sort(key=lambda job: job[0])  # a channel's model and its fold models side by side
    written: list[str] = []
    loaded: tuple[str, np.ndarray] | None = None  # one channel's train split, read once
    for name, folders, target_cache in tqdm(
        jobs, desc="combine", unit="model", disable=not progress
    ):
        target = target_cache.folder / f"{name}.pt"
        if target.exists():
            continue
        checkpoints = [load_checkpoint(folder / f"{name}.pt", device="cpu") for folder in folders]
        chan, _, fold = name.partition(".fold")
        if loaded is None or loaded[0] != chan:
            loaded = chan, load_series(root, chan, "train")
        train = loaded[1]
        if fold:  # the half this fold model was trained on
            halves = fold_halves(train, recipe.window)
            if halves is None:
                raise ValueError(f"{name}: the train split of {chan} is too short to halve")
            trained_on = halves[int(fold)]
        else:  # the whole train split, or the part before its held-out end (`--fit-part`)
            trained_on = recipe.fitted_part(train)
        combined = combine_checkpoints(checkpoints, [trained_on], combine)
        save_checkpoint(combined, target)
        written.append(name)
    return written


def _common_checkpoints(folders: list[Path]) -> list[str]:
    """The checkpoint names (``A-1``, or ``A-1.fold0`` in a ``crossfit/``) every folder holds."""
    return sorted(set.intersection(*({p.stem for p in folder.glob("*.pt")} for folder in folders)))
