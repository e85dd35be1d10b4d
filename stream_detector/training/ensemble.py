"""One ensemble checkpoint from member checkpoints trained one by one, without retraining.

An ensemble's ``fit`` trains each member as it would be trained alone (see
``models.ensemble``), so checkpoints trained separately with one recipe are the members
``train --model ensemble`` would have made. What is not the members' is the calibration: it
holds the ensemble's own scores on the training windows, so it is computed again here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import structlog

from stream_detector.models.base import FitHistory
from stream_detector.models.ensemble import ScoreEnsemble, summarise_histories
from stream_detector.training.checkpoint import Checkpoint
from stream_detector.training.trainer import calibrate, check_series, split_windows

__all__ = ["combine_checkpoints", "seed_offsets", "without_seed"]

log = structlog.get_logger(__name__)

# What must be equal for checkpoints to be members of one ensemble checkpoint.
_SHARED = ("window", "stride", "n_features", "channels", "dataset")
_SHARED_FIT = ("config", "val_fraction", "split", "train_stride", "scaling")


def _shared(members: Sequence[Checkpoint]) -> None:
    first = members[0]
    for index, other in enumerate(members[1:], start=1):
        for name in _SHARED:
            if getattr(other, name) != getattr(first, name):
                raise ValueError(
                    f"member {index} differs from member 0 in {name}: "
                    f"{getattr(other, name)!r} against {getattr(first, name)!r}"
                )
        if other.scaler.to_dict() != first.scaler.to_dict():
            raise ValueError(f"member {index} has another scaler than member 0")
        for name in _SHARED_FIT:
            mine, theirs = other.fit.get(name), first.fit.get(name)
            if name == "config":
                # Members may differ in seed alone (an ensemble of seeds): see seed_offsets.
                mine, theirs = without_seed(mine), without_seed(theirs)
            if mine != theirs:
                raise ValueError(
                    f"member {index} was trained with another {name}: "
                    f"{other.fit.get(name)!r} against {first.fit.get(name)!r}"
                )


def without_seed(config: Any) -> Any:
    """A fit config (as a dict) less its seed: what members of an ensemble of seeds share."""
    return {k: v for k, v in config.items() if k != "seed"} if isinstance(config, dict) else config


def seed_offsets(seeds: Sequence[int], split: str) -> list[int]:
    """Each member's fit seed less the first's. Members of other seeds combine only when
    their windows were split chronologically: a shuffled split is drawn with the seed, and an
    ensemble draws it once, with the first member's."""
    offsets = [seed - seeds[0] for seed in seeds]
    if any(offsets) and split != "chronological":
        raise ValueError(
            f"members trained with other seeds ({', '.join(map(str, seeds))}) combine only "
            f"when split chronologically, not {split!r}"
        )
    return offsets


def combine_checkpoints(
    members: Sequence[Checkpoint], train_series: Sequence[np.ndarray], combine: str = "mean"
) -> Checkpoint:
    """The ensemble of ``members``, calibrated on the raw train series they were trained on
    (for a recipe fitted on part of a channel's train split, that part); ``combine`` is how
    its score combines theirs (``ScoreEnsemble``).

    ``train_series`` are the series of the members' channels, in their order. ValueError
    when the members were not trained alike (window, scaler, channels, fit config, ...).
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    _shared(members)
    first = members[0]
    if check_series(train_series, first.channels, first.window) != first.n_features:
        raise ValueError(f"train series do not have the members' {first.n_features} features")
    offsets = seed_offsets(
        [int(member.fit["config"]["seed"]) for member in members],
        first.fit.get("split", "chronological"),
    )
    detector = ScoreEnsemble.of([member.detector for member in members], offsets, combine)
    scaled = [first.scaler.transform(s) for s in train_series]
    # The members' own split (a shuffled one drawn with the fit seed), so the recorded window
    # counts are theirs. Checkpoints from before the split was recorded were chronological.
    train, val = split_windows(
        scaled,
        first.window,
        int(first.fit["train_stride"]),
        float(first.fit["val_fraction"]),
        first.fit.get("split", "chronological"),
        int(first.fit["config"]["seed"]),
    )
    detector.choose_members(val)  # as `fit` chooses them, on the same validation windows
    histories = [FitHistory.from_dict(member.fit["history"]) for member in members]
    history = summarise_histories(histories, float(first.fit["config"]["lr"]))
    fit: dict[str, Any] = {
        **{name: first.fit[name] for name in _SHARED_FIT if name in first.fit},
        "history": history.to_dict(),
        "train_windows": len(train),
        "val_windows": len(val),
    }
    checkpoint = Checkpoint(
        detector=detector,
        scaler=first.scaler,
        calibration=calibrate(detector, train, val, scaled[-1]),
        window=first.window,
        stride=first.stride,
        n_features=first.n_features,
        channels=list(first.channels),
        dataset=first.dataset,
        fit=fit,
        created_at=time.time(),
    )
    log.info(
        "ensemble_combined",
        members=[member.model_version for member in members],
        counted=[bool(on) for on in detector.gate],
        model_version=checkpoint.model_version,
        channels=len(first.channels),
    )
    return checkpoint
