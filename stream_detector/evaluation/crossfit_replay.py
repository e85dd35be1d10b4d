"""False episodes on a long clean stream the model never saw: each threshold of a grid over
every channel's train split, cross-fitted in two halves.

A diagnostic for the threshold race's proxy. The race's rule sees false alarms only on the
held-out fifth of train (26,969 steps on SMAP, about one false episode per variant), too
short to tell thresholds apart; SMAP's test streams raise twenty. `train_replay` replays the
whole train split, but most of it was fitted, so its errors are smaller than a test
stream's, and it agreed with the test streams less well than the held-out part (ρ 0.50 and
0.12 against 0.75 and 0.45 over the race's grid; docs/threshold-race.md).

Here each channel's train split is cut in two halves. A model trained on one half, with the
cache's own recipe, scores the other, and every threshold replays that half through the
daemon's engine, starting from that model's own training prior as a test stream starts from
the deployed model's. So the errors are out of sample, as on a test stream, over about four
times the held-out part's steps. Every episode is counted as false: SMAP/MSL's train splits
are meant to be nominal, though not all of them are clean. It reads no test label, and it
chooses nothing: what a rule may make of it is written down before it is used.

The fold models are a cost of their own: two trainings per channel, about one training of
the recipe per data set (MSL's 46 under telemanom's training took 30 minutes of two processes
here; a GPU trains them in seconds, `deploy/device/race.sh`). They are kept in
``<cache>/crossfit`` with their scores, so a second grid only replays, and ``--save-counts``
records what the replay counted, for `replay_counts` to read once the models are gone.
``--fold-epochs N`` caps their training at N epochs, a cheaper stream whose errors run higher
than the recipe's would; those fold models are kept apart, in ``<cache>/crossfit-epochsN``.

    python -m stream_detector.evaluation.crossfit_replay --cache artifacts/cache/lstm_dt_np10 \\
        --thresholds docs/threshold-pruning.json
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from stream_detector.data.smap_msl import load_series
from stream_detector.evaluation.replay_counts import (
    decision_lines,
    no_noisier_than,
    replay_report,
    save_counts,
)
from stream_detector.evaluation.runner import ModelRecipe, train_on
from stream_detector.evaluation.telemanom_batch import cache_options
from stream_detector.evaluation.threshold_grid import (
    ScoreCache,
    ThresholdVariant,
    load_grid,
    raw_scores,
    run_engine,
)
from stream_detector.evaluation.train_replay import (
    ReplayCount,
    channel_crafts,
    replay_options,
)
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.training.checkpoint import Checkpoint

__all__ = [
    "FOLDS",
    "SCORED_KEY",
    "Fold",
    "cache_recipe",
    "decision_lines",
    "fold_folder",
    "fold_halves",
    "fold_recipe",
    "fold_store",
    "no_noisier_than",
    "replay_crossfit",
    "train_history",
]

FOLDS = 2
# The key of a fold model's scores of the other half in its cache entry.
SCORED_KEY = "other_half"
# A half shorter than two windows leaves its model too few windows to train on and to
# stop early by; such a channel is left out (and said so), not trained on a sliver.
MIN_HALF_WINDOWS = 2


@dataclass(frozen=True)
class Fold:
    """One fold of a channel: the model trained on one half, and the half it scores."""

    chan: str
    index: int  # 0: trained on the first half, scores the second; 1: the other way round
    checkpoint: Checkpoint
    scored: np.ndarray  # the half it scores, (T, D)
    scores: np.ndarray  # its raw window scores of that half, in stream order
    # Every array its cache entry held when read (other scores of the same model), by key.
    cached: dict[str, np.ndarray] = field(default_factory=dict)


def cache_recipe(cache: Path) -> ModelRecipe:
    """The recipe a score cache was made with, read back from its ``recipe.json``."""
    stamp = cache / "recipe.json"
    if not stamp.is_file():
        raise click.ClickException(f"{cache} is not a score cache: it has no recipe.json")
    return ModelRecipe.from_description(json.loads(stamp.read_text()))


def fold_recipe(recipe: ModelRecipe, epochs: int | None = None) -> ModelRecipe:
    """The recipe the fold models are trained with: the cache's own, or with its training
    capped at `epochs` (early stopping and everything else as the cache's)."""
    if epochs is None:
        return recipe
    return dataclasses.replace(recipe, fit=dataclasses.replace(recipe.fit, epochs=epochs))


def fold_folder(cache: Path, epochs: int | None = None) -> Path:
    """Where the fold models live: ``cache/crossfit``, or ``cache/crossfit-epochsN`` for
    folds capped at N epochs, so that the two never share (or refuse) one folder."""
    return cache / ("crossfit" if epochs is None else f"crossfit-epochs{epochs}")


def fold_store(cache: Path, epochs: int | None = None) -> tuple[ModelRecipe, ScoreCache]:
    """The fold models' recipe and the cache that keeps them with their scores (`fold_recipe`,
    `fold_folder`)."""
    recipe = fold_recipe(cache_recipe(cache), epochs)
    return recipe, ScoreCache(fold_folder(cache, epochs), recipe)


def fold_halves(train: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The two halves of a train split (the first holds the odd step), or None if either is
    shorter than `MIN_HALF_WINDOWS` windows."""
    half = (len(train) + 1) // 2
    first, second = train[:half], train[half:]
    if min(len(first), len(second)) < MIN_HALF_WINDOWS * window:
        return None
    return first, second


def _train_fold(recipe: ModelRecipe, chan: str, half: np.ndarray) -> Checkpoint:
    return train_on(recipe, chan, half)


def channel_folds(
    root: Path, chan: str, recipe: ModelRecipe, store: ScoreCache, base: Settings
) -> list[Fold]:
    """A channel's two folds, trained and scored once, then read from `store`; none if its
    train split is too short to halve."""
    halves = fold_halves(load_series(root, chan, "train"), recipe.window)
    if halves is None:
        return []
    folds = []
    for index in range(FOLDS):
        key, trained_on, scored = f"{chan}.fold{index}", halves[index], halves[1 - index]
        cached = store.load(key)
        arrays: dict[str, np.ndarray] = {}
        if cached is None:
            checkpoint = _train_fold(recipe, chan, trained_on)
        else:
            checkpoint, arrays = cached
        if SCORED_KEY not in arrays:
            arrays = {SCORED_KEY: raw_scores(base, ServedModel(checkpoint), chan, scored)}
            store.save(key, checkpoint, arrays)
        folds.append(Fold(chan, index, checkpoint, scored, arrays[SCORED_KEY], arrays))
    return folds


def train_history(folds: Sequence[Fold]) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """The cross-fitted train in time order: its values, their scores, and where the second
    half starts. Fold 1 (trained on the second half) scores the first half, fold 0 the
    second. None without both folds."""
    if len(folds) != 2:
        return None
    first, second = folds[1], folds[0]
    values = np.concatenate([first.scored, second.scored])
    scores = np.concatenate([first.scores, second.scores])
    return values, scores, [len(first.scored)]


def replay_crossfit(
    root: Path,
    dataset: str,
    cache: Path,
    variants: Sequence[ThresholdVariant],
    channels: Sequence[str] | None = None,
    base: Settings | None = None,
    fold_epochs: int | None = None,
) -> tuple[dict[str, dict[str, ReplayCount]], list[str]]:
    """variant name → spacecraft → its episodes over both folds of every channel, and the
    channels left out because their train split is too short to halve. The fold models use
    the recipe of `cache` (its training capped at `fold_epochs` if given) and live in
    `fold_folder`."""
    base = base or Settings()
    recipe, store = fold_store(cache, fold_epochs)
    crafts = channel_crafts(root, dataset, channels)
    out: dict[str, dict[str, ReplayCount]] = {v.name: {} for v in variants}
    skipped: list[str] = []
    for chan, craft in tqdm(crafts.items(), desc="cross-fitted replay", unit="channel"):
        folds = channel_folds(root, chan, recipe, store, base)
        if not folds:
            skipped.append(chan)
        for fold in folds:
            model = ServedModel(fold.checkpoint)
            for variant in variants:
                run = run_engine(variant.settings(base), model, chan, fold.scored, fold.scores)
                count = out[variant.name].setdefault(craft, ReplayCount())
                count.episodes += len(run.episodes())
                count.steps += len(fold.scores)
    return out, skipped


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@replay_options
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="only every N-th channel, starting at the I-th (0-based), as for `evaluate`: N "
    "processes with --shard 0/N … N-1/N train the fold models in parallel, then one run "
    "without it replays them all from the cache (`make race-crossfit JOBS=N`)",
)
@click.option(
    "--fold-epochs",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="train the fold models for at most N epochs instead of the cache recipe's (cheaper; "
    "their errors run higher); kept apart in crossfit-epochsN/",
)
@click.option(
    "--decide",
    is_flag=True,
    help="with --against and --dataset both: also print rule v5's verdict on the grid, its "
    "quiet half this replay (no variant noisier than the default on either data set)",
)
@click.option(
    "--save-counts",
    "save_counts_to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="also record the replay's counts in FILE (JSON), for `python -m "
    "stream_detector.evaluation.replay_counts` to read without the fold models (with "
    "--shard, its share: that command sums the shares of one run and asks for all of them)",
)
@cache_options(
    "a score cache of `evaluate --thresholds ... --score-cache`: its recipe trains the fold "
    "models, which are kept in its crossfit/ folder (crossfit-epochsN/ with --fold-epochs)"
)
def main(
    cache: Path,
    grid: Path,
    against: Path | None,
    shard: str | None,
    fold_epochs: int | None,
    decide: bool,
    save_counts_to: Path | None,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
) -> None:
    """Cut every channel's train split in two halves, train the cache's recipe on each and
    score the other, replay those out-of-sample scores through each threshold of a grid and
    count the episodes, all presumed false (label-free; a diagnostic that chooses nothing)."""
    from stream_detector.cli import limit_torch_threads, selected_channels

    if decide and against is None:
        raise click.UsageError("--decide judges a grid's results: give them with --against")
    settings = Settings()
    limit_torch_threads(settings)
    root = data_root or Path(settings.data.root)
    selected = selected_channels(root, dataset, channels, shard)
    try:
        counts, skipped = replay_crossfit(
            root, dataset, cache, load_grid(grid), selected, settings, fold_epochs
        )
    except ValueError as exc:  # another recipe's folds in crossfit/, a series it cannot use
        raise click.ClickException(str(exc)) from exc
    stream = "cross-fitted train"
    if save_counts_to is not None:
        save_counts(
            save_counts_to,
            counts,
            stream=stream,
            grid=grid,
            left_out=skipped,
            recipe=cache_recipe(cache).describe() | {"fold_epochs": fold_epochs},
            source=f"crossfit_replay --dataset {dataset} --cache {cache}"
            + "".join(f" --channel {c}" for c in channels),
            shard=shard,
        )
    try:
        click.echo(replay_report(counts, stream, grid, against, decide, settings))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if skipped:
        click.echo(
            f"left out (train split under {2 * MIN_HALF_WINDOWS} windows): " + ", ".join(skipped)
        )


if __name__ == "__main__":
    main()
