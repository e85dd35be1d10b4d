"""Several detectors scoring the same window, their scores averaged (``kind = "ensemble"``).

The threshold race's label-free rule picked the mean of two telemanom predictors, one trained
to predict the next value and one trained to predict the next ten (both scored on the
one-step-ahead error): docs/threshold-race.md, fifth look. Those are the default members.

Each member is trained exactly as it would be alone: ``fit`` builds it afresh under the fit
seed, then fits it with the same ``FitConfig``. So an ensemble of checkpoints trained one by
one (see ``training.ensemble``) is the ensemble ``train`` would have made, bit for bit.

Members share the window and the scaler (one checkpoint holds one of each): mix kinds trained
on the same scaling, as the default's two ``lstm_dt`` are.

A member spec may carry a ``seed``: an offset added to the fit seed for that member, so an
ensemble of one recipe trained under several seeds averages their errors. Such a member is the
one ``train --seed <fit seed + offset>`` makes alone; the split of the windows stays the
ensemble's (a shuffled split is drawn once, with the fit seed).

``combine`` says how the members' scores make one: ``mean`` (an "or": one member's large
error is enough) or ``geometric``, the geometric mean (an "and": large only where every
member's error is, docs/threshold-race.md, forty-second look). The geometric mean keeps the
scores' unit, so an absolute floor on them means what it meant, and takes members whose scores
are never negative only. ``gated`` is the geometric mean of the first member and of each other
member whose median score on the validation windows is above 0: a member that predicts a
channel's validation telemetry exactly most of the time has no error scale of its own there,
and a product with its zeros mostly silent teaches a threshold to alarm at the first nonzero
step (docs/threshold-race.md, forty-second and forty-third looks). Which members count is
chosen per checkpoint when it is fitted (or combined from members) and kept with its weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import numpy as np
import torch

from stream_detector.models.base import (
    Detector,
    FitConfig,
    FitHistory,
    accepted_hyperparameters,
    build_detector,
    register,
    resolve_device,
    seed_everything,
)
from stream_detector.models.lstm_dt import LSTMNextValuePredictor

__all__ = [
    "COMBINATIONS",
    "DEFAULT_MEMBERS",
    "ScoreEnsemble",
    "checked_combination",
    "summarise_histories",
]

COMBINATIONS = ("mean", "geometric", "gated")
# Combinations that multiply the members' scores, so take never-negative scores only.
_PRODUCTS = ("geometric", "gated")

# The rule's pick (docs/threshold-race.md, fifth look): telemanom's predictor with one predicted
# value and with telemanom's ten, both scored on the first prediction.
DEFAULT_MEMBERS: list[dict[str, Any]] = [
    {"kind": "lstm_dt", "hyperparameters": {"n_predictions": 1}},
    {"kind": "lstm_dt", "hyperparameters": {"n_predictions": 10}},
]


def checked_combination(combine: str) -> str:
    """``combine`` if it names one of `COMBINATIONS`; ValueError otherwise."""
    if combine not in COMBINATIONS:
        raise ValueError(f"combine must be one of {', '.join(COMBINATIONS)}, got {combine!r}")
    return combine


def summarise_histories(histories: list[FitHistory], lr: float) -> FitHistory:
    """One entry: the members' mean train and validation loss at their own best epochs."""
    return FitHistory(
        train_loss=[float(np.mean([h.train_loss[h.best_epoch] for h in histories]))],
        val_loss=(
            [float(np.mean([h.val_loss[h.best_epoch] for h in histories]))]
            if all(h.val_loss for h in histories)
            else []
        ),
        learning_rates=[lr],
        best_epoch=0,
        stopped_early=any(h.stopped_early for h in histories),
        seconds=sum(h.seconds for h in histories),
        members=[h.to_dict() for h in histories],
    )


@register
class ScoreEnsemble(Detector):
    """The mean of its members' scores; each member trained as if alone."""

    kind = "ensemble"
    # The default members are lstm_dt: train the way it trains.
    recipe_defaults = LSTMNextValuePredictor.recipe_defaults

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        members: list[dict[str, Any]] | None = None,
        combine: str = "mean",
        score_features: list[int] | None = None,
    ) -> None:
        super().__init__(window, n_features)
        self.combine = checked_combination(combine)
        specs = DEFAULT_MEMBERS if members is None else members
        if not isinstance(specs, list) or len(specs) < 2:
            raise ValueError(f"members must be a list of at least two detectors, got {specs!r}")
        self._specs: list[tuple[str, dict[str, Any]]] = []
        self.seeds: list[int] = []
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
                raise ValueError(
                    f"each member must be {{'kind': ..., 'hyperparameters': {{...}}}}, got {spec!r}"
                )
            seed = spec.get("seed", 0)
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise ValueError(f"a member's seed must be an integer offset, got {seed!r}")
            self.seeds.append(seed)
            kind, params = spec["kind"], dict(spec.get("hyperparameters") or {})
            if kind == self.kind:
                raise ValueError("an ensemble cannot have an ensemble as a member")
            # The command line's --score-features speaks for every member that scores columns.
            if score_features is not None and "score_features" in accepted_hyperparameters(kind):
                params.setdefault("score_features", list(score_features))
            self._specs.append((kind, params))
        self.members: list[Detector] = [self._build(i) for i in range(len(self._specs))]
        # Which members' scores count: all of them, but for `gated` once `choose_members` ran.
        self.gate = np.ones(len(self.members), dtype=bool)
        if combine in _PRODUCTS:
            signed = [m.kind for m in self.members if not m.nonnegative_scores]
            if signed:
                raise ValueError(
                    f"combine={combine!r} needs members whose scores are never negative; "
                    f"{', '.join(signed)} may score below zero"
                )

    def _build(self, index: int) -> Detector:
        kind, params = self._specs[index]
        return build_detector(kind, self.window, self.n_features, **params)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        # Each member's full hyperparameters, defaults included: what rebuilds it exactly. A
        # seed offset of 0 is left out, so ensembles made before offsets keep their version.
        return {
            "members": [
                {
                    "kind": member.kind,
                    "hyperparameters": member.hyperparameters,
                    **({"seed": seed} if seed else {}),
                }
                for member, seed in zip(self.members, self.seeds, strict=True)
            ],
            # Left out when it is the mean, so ensembles made before it keep their version.
            **({"combine": self.combine} if self.combine != "mean" else {}),
        }

    def to(self, device: str | torch.device) -> Self:
        self.device = resolve_device(device)
        for member in self.members:
            member.to(self.device)
        return self

    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None,
        config: FitConfig,
        progress: bool = True,
    ) -> FitHistory:
        """Train each member as it would be trained alone; one summary entry of their losses.

        The returned history has a single entry: the members' mean train and validation loss
        at their own best epochs. Each member's full history is in ``members``.
        """
        self.check_windows(train)
        histories: list[FitHistory] = []
        for index, offset in enumerate(self.seeds):
            # As `train --seed <fit seed + offset>` would build it alone: the weights drawn
            # right after seeding, then fitted under that seed.
            alone = dataclasses.replace(config, seed=config.seed + offset)
            if alone.seed < 0:
                raise ValueError(f"member {index}'s seed {alone.seed} is negative")
            seed_everything(alone.seed)
            member = self._build(index).to(config.device)
            histories.append(member.fit(train, val, alone, progress=progress))
            self.members[index] = member
        self.device = self.members[0].device
        self.choose_members(val)
        return summarise_histories(histories, config.lr)

    def choose_members(self, val: np.ndarray | None) -> None:
        """For ``combine='gated'``: keep the first member and each other whose median score on
        the validation windows ``val`` is above 0. Nothing to choose for other combinations.

        ValueError without validation windows: what the gate reads is not in-sample (the
        analogues score their own training windows 0).
        """
        if self.combine != "gated":
            return
        if val is None or len(val) == 0:
            raise ValueError(
                "combine='gated' chooses its members on the validation windows and there are "
                "none (is val_fraction 0?)"
            )
        self.check_windows(val)
        medians = [float(np.median(m.score_in_batches(val))) for m in self.members[1:]]
        self.gate = np.array([True, *(median > 0 for median in medians)], dtype=bool)

    @classmethod
    def of(
        cls, members: list[Detector], seeds: list[int] | None = None, combine: str = "mean"
    ) -> Self:
        """An ensemble of already trained detectors, which keep their weights; ``seeds`` are
        their seed offsets from the first's fit seed (default: all 0). A gated one counts
        every member until `choose_members` is given its validation windows."""
        if not members:
            raise ValueError("an ensemble needs members")
        offsets = [0] * len(members) if seeds is None else list(seeds)
        if len(offsets) != len(members):
            raise ValueError(f"{len(members)} members but {len(offsets)} seeds")
        first = members[0]
        shapes = {(m.window, m.n_features) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"members differ in window or feature count: {sorted(shapes)}")
        specs = [
            {"kind": m.kind, "hyperparameters": m.hyperparameters, "seed": seed}
            for m, seed in zip(members, offsets, strict=True)
        ]
        ensemble = cls(first.window, first.n_features, members=specs, combine=combine)
        ensemble.members = list(members)
        ensemble.device = first.device
        return ensemble

    def score(self, windows: np.ndarray) -> np.ndarray:
        """The counted members' scores combined (B,): their mean, or their geometric mean."""
        self.check_windows(windows)
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        scores = [member.score(windows).astype(np.float64) for member in self._counted()]
        if self.combine == "mean":
            return (np.sum(scores, axis=0) / len(scores)).astype(np.float32)
        # A product of n small errors underflows long before their geometric mean does: the
        # n-th roots are taken first. A member that scores a step exactly (0) silences it.
        return np.prod(np.power(scores, 1.0 / len(scores)), axis=0).astype(np.float32)

    def _counted(self) -> list[Detector]:
        return [member for member, on in zip(self.members, self.gate, strict=True) if on]

    def contributions(self, windows: np.ndarray) -> np.ndarray | None:
        """Mean of the counted members' contributions, when each of them has them."""
        parts = [member.contributions(windows) for member in self._counted()]
        if any(part is None for part in parts):
            return None
        return np.mean(np.stack(parts), axis=0).astype(np.float32)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            f"members.{index}.{name}": tensor
            for index, member in enumerate(self.members)
            for name, tensor in member.state_dict().items()
        }
        if self.combine == "gated":  # chosen on data, like a weight (and in the model version)
            state["gate"] = torch.from_numpy(self.gate.copy())
        return state

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        state_dict = dict(state_dict)
        gate = state_dict.pop("gate", None)
        if (gate is not None) != (self.combine == "gated"):
            raise RuntimeError(
                "a gated ensemble's state_dict holds its gate and no other's does; "
                f"combine={self.combine!r}, gate {'absent' if gate is None else 'present'}"
            )
        if gate is not None:
            if gate.shape != (len(self.members),) or not bool(gate[0]):
                raise RuntimeError(f"a gate must keep the first of {len(self.members)} members")
            self.gate = gate.cpu().numpy().astype(bool)
        parts: list[dict[str, torch.Tensor]] = [{} for _ in self.members]
        for key, tensor in state_dict.items():
            prefix, index, name = [*key.split(".", 2), "", ""][:3]
            if prefix != "members" or not index.isdigit() or int(index) >= len(parts):
                raise RuntimeError(f"unexpected key in an ensemble's state_dict: {key!r}")
            parts[int(index)][name] = tensor
        for member, part in zip(self.members, parts, strict=True):
            member.load_state_dict(part)
