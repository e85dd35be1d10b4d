"""Priming: a channel's threshold state learned from its history before the daemon meets it.

A daemon that meets a channel for the first time learns its threshold from the live
stream's first scores: until it has seen enough, its ε is fitted on a handful of errors,
and on short streams most of the false alarms come from there (docs/threshold-race.md,
twenty-fifth and thirty-ninth looks). Priming runs the daemon's own engine over the
channel's history first, as models that never saw that history score it (the cross-fitted
train split: each half scored by a model trained on the other), and keeps the threshold
state the engine ends in. Scores of the deployed model on its own training data would not
do: it fitted them, so they are smaller than what it makes on new data, and an ε fitted on
them alarms early (the twenty-second look).

Only the threshold state is kept. The buffer and the episode start new, and no Kafka
offset or partition is stamped: the live stream's sequence numbers and offsets are its own,
so its first record is applied and starts the buffer. A store writes a primed state only
where the channel has none (`StateStore.prime`): priming never replaces a live state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream_detector.engine import ChannelState, ScoringModel
from stream_detector.offline import run_offline
from stream_detector.records import ModelInfo
from stream_detector.settings import Settings
from stream_detector.thresholds.base import ScorePrior

__all__ = ["PRIMED_PARTITION", "ReplayedScores", "primed_from_cache", "primed_state"]

# No Kafka partition: the live stream's first record sets the channel's own.
PRIMED_PARTITION = -1


class ReplayedScores:
    """A `ScoringModel` that hands back precomputed window scores in call order (the
    window, stride, features, channels, version and prior are `model`'s)."""

    def __init__(self, model: ScoringModel, scores: np.ndarray) -> None:
        self.window, self.stride = model.window, model.stride
        self.n_features, self.channels = model.n_features, model.channels
        self._info, self._prior = model.model_info, model.score_prior
        self._scores = scores
        self._at = 0

    @property
    def model_info(self) -> ModelInfo:
        return self._info

    @property
    def score_prior(self) -> ScorePrior | None:
        return self._prior

    def score_raw(self, windows: np.ndarray) -> np.ndarray:
        out = self._scores[self._at : self._at + len(windows)]
        if len(out) != len(windows):
            raise RuntimeError("replayed scores ran out: the stream differs from the first pass")
        self._at += len(windows)
        return out


def primed_state(
    settings: Settings,
    model: ScoringModel,
    channel: str,
    history: np.ndarray,
    scores: np.ndarray,
    breaks: Sequence[int] = (),
) -> ChannelState:
    """The state a channel starts from after its `history` (T, F), whose windows `scores`
    were made by models that never saw it (in stream order; a skipped step at each of
    `breaks`, where another model's scores begin). The engine is the daemon's, built from
    `settings` around `model` (the deployed one: its window, stride and prior); its
    threshold state is kept, nothing else."""
    from stream_detector.app import build_engine

    engine = build_engine(settings, ReplayedScores(model, scores))
    engine.emit_scores = True
    run = run_offline(engine, channel, history, steps_per_record=10, breaks=breaks)
    assert run.state is not None
    primed = engine.new_state(channel, PRIMED_PARTITION)
    primed.threshold = run.state.threshold
    return primed


def primed_from_cache(
    settings: Settings,
    model: ScoringModel,
    root: Path,
    cache: Path,
    channels: Sequence[str],
    progress: bool = True,
) -> tuple[list[ChannelState], list[str]]:
    """Primed states of `channels` from the SMAP/MSL train split at `root`, scored by the fold
    models of a score cache (`evaluation.crossfit_replay`, trained there with the cache's
    recipe if missing); and the channels left unprimed, with the reason. The cache's recipe
    must have `model`'s window."""
    from tqdm import tqdm

    from stream_detector.evaluation.crossfit_replay import (
        channel_folds,
        fold_store,
        train_history,
    )

    recipe, store = fold_store(cache)
    if recipe.window != model.window:
        raise ValueError(
            f"{cache} holds models of window {recipe.window}, the daemon's model has "
            f"{model.window}: prime from the cache its checkpoint was made from"
        )
    states: list[ChannelState] = []
    unprimed: list[str] = []
    for chan in tqdm(channels, desc="priming", unit="channel", disable=None if progress else True):
        if model.channels is not None and chan not in model.channels:
            unprimed.append(f"{chan} (not served by the model)")
            continue
        history = train_history(channel_folds(root, chan, recipe, store, settings))
        if history is None:
            unprimed.append(f"{chan} (train split too short to halve)")
            continue
        states.append(primed_state(settings, model, chan, *history))
    return states, unprimed
