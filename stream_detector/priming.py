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

The fold models learned from half of train each, so their errors run at another scale than
the deployed model's (on MSL about 1.4 times larger at the median, docs/threshold-race.md,
fortieth look), and an ε primed on them stands where the live model's errors are not.
Priming therefore rescales the history by how much larger fold 0's scores run than the
deployed model's on the one part of train neither fitted: the deployed model's own validation
windows at the end of a chronological split (`history_scale`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream_detector.engine import ChannelState, ScoringModel
from stream_detector.offline import run_offline
from stream_detector.records import ModelInfo
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.thresholds.base import ScorePrior
from stream_detector.training.trainer import trained_windows

if TYPE_CHECKING:
    from stream_detector.evaluation.crossfit_replay import Fold

__all__ = [
    "MIN_SCALE_SCORES",
    "PRIMED_PARTITION",
    "HistoryScale",
    "PrimedChannels",
    "ReplayedScores",
    "by_reason",
    "history_scale",
    "primed_from_cache",
    "primed_state",
    "unseen_start",
]

# No Kafka partition: the live stream's first record sets the channel's own.
PRIMED_PARTITION = -1
# A channel whose unseen part gives fewer scores than this is primed unscaled: a median of a
# few dozen errors says little of a scale (fixed by the fortieth look, not tuned).
MIN_SCALE_SCORES = 100


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


def unseen_start(fit: Mapping[str, Any], rows: int, window: int) -> int | None:
    """The first row of a checkpoint's own validation windows in a train series of `rows`
    rows (`fit`: the checkpoint's fit record): from there on, the part of the series the model
    took no gradient from. None where there is no such part: a shuffled split spreads its
    validation windows through the series, and a `val_fraction` of 0 has none."""
    # Checkpoints from before the split was recorded were split chronologically.
    if fit.get("split", "chronological") != "chronological":
        return None
    fraction, stride = float(fit.get("val_fraction", 0.0)), int(fit.get("train_stride", 1))
    if fraction <= 0:
        return None
    # The trainer's own split (`split_windows`): its first windows train, the rest validate.
    return trained_windows((rows - window) // stride + 1, fraction) * stride


@dataclass(frozen=True)
class HistoryScale:
    """What a channel's cross-fitted history is multiplied by before priming: the deployed
    model's median score over fold 0's on the rows neither fitted (1.0 where that cannot be
    read, with the reason)."""

    factor: float = 1.0
    unscaled_because: str | None = None
    rows: int = 0  # how many scores of each model the factor was read from

    def apply(
        self, history: tuple[np.ndarray, np.ndarray, list[int]]
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """`train_history`'s (values, scores, breaks) with its scores times the factor."""
        values, scores, breaks = history
        return values, scores * np.float32(self.factor), breaks


def history_scale(
    settings: Settings, model: ServedModel, chan: str, train: np.ndarray, folds: Sequence[Fold]
) -> HistoryScale:
    """The scale of `model` (the deployed one) against fold 0's (trained on the first half of
    `train`, scoring the second) on the rows of `train` that `model` validated on and fold 0
    never saw. Fold 1 scores the first half, where the deployed model has no unseen rows; its
    scores take fold 0's factor, as a model of the same recipe trained on as much data."""
    from stream_detector.evaluation.threshold_grid import raw_scores

    start = unseen_start(model.checkpoint.fit, len(train), model.window)
    if start is None:
        return HistoryScale(
            unscaled_because="its model was not split chronologically: no part of train is unseen"
        )
    half = len(folds[1].scored)
    if start < half:
        return HistoryScale(unscaled_because="its model's validation part begins in the first half")
    own = (
        raw_scores(settings, model, chan, train[start:])
        if len(train) - start >= model.window
        else np.empty(0)
    )
    theirs = folds[0].scores[start - half : start - half + len(own)]
    rows = min(len(own), len(theirs))
    if rows < MIN_SCALE_SCORES:
        return HistoryScale(
            unscaled_because=f"its unseen part gives {rows} scores, fewer than {MIN_SCALE_SCORES}",
            rows=rows,
        )
    mine, fold = float(np.median(own[:rows])), float(np.median(theirs[:rows]))
    if mine <= 0 or fold <= 0:
        return HistoryScale(unscaled_because="a median score of zero", rows=rows)
    return HistoryScale(mine / fold, rows=rows)


@dataclass
class PrimedChannels:
    """What priming made: the states, the channels left unprimed (each as "chan (reason)"),
    those primed unscaled (channel → reason), and each scaled channel's factor."""

    states: list[ChannelState] = field(default_factory=list)
    unprimed: list[str] = field(default_factory=list)
    unscaled: dict[str, str] = field(default_factory=dict)
    factors: dict[str, float] = field(default_factory=dict)


def by_reason(reasons: Mapping[str, str]) -> list[str]:
    """One "reason: chan, chan, ..." line per reason, in the order first met: a model trained
    alike leaves every channel unscaled for the same reason."""
    grouped: dict[str, list[str]] = {}
    for chan, reason in reasons.items():
        grouped.setdefault(reason, []).append(chan)
    return [f"{reason} ({len(chans)}): {', '.join(chans)}" for reason, chans in grouped.items()]


def primed_from_cache(
    settings: Settings,
    model: ServedModel,
    root: Path,
    cache: Path,
    channels: Sequence[str],
    progress: bool = True,
    scale: bool = True,
) -> PrimedChannels:
    """Primed states of `channels` from the SMAP/MSL train split at `root`, scored by the fold
    models of a score cache (`evaluation.crossfit_replay`, trained there with the cache's
    recipe if missing), each history rescaled to `model`'s scale (`history_scale`) unless
    `scale` is off. The cache's recipe must have `model`'s window."""
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
    out = PrimedChannels()
    for chan in tqdm(channels, desc="priming", unit="channel", disable=None if progress else True):
        if model.channels is not None and chan not in model.channels:
            out.unprimed.append(f"{chan} (not served by the model)")
            continue
        folds = channel_folds(root, chan, recipe, store, settings)
        history = train_history(folds)
        if history is None:
            out.unprimed.append(f"{chan} (train split too short to halve)")
            continue
        if scale:
            # The history's values are the train split, in order.
            found = history_scale(settings, model, chan, history[0], folds)
            if found.unscaled_because is None:
                out.factors[chan] = found.factor
                history = found.apply(history)
            else:
                out.unscaled[chan] = found.unscaled_because
        out.states.append(primed_state(settings, model, chan, *history))
    return out
