"""The detector interface every model implements, and the registry that finds models by name.

Training, evaluation and the daemon all speak this one vocabulary: build a detector by
``kind``, ``fit`` it on scaled windows, ``score`` batches of scaled windows (high means
anomalous), and move its weights with ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

import abc
import inspect
import random
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import torch

__all__ = [
    "Detector",
    "FitConfig",
    "FitHistory",
    "RecipeDefaults",
    "available_detectors",
    "build_detector",
    "get_detector_class",
    "register",
    "resolve_device",
    "seed_everything",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; any other name is taken as given."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch: weights are drawn at construction, before fit seeds."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


OPTIMIZERS = ("adam", "keras_adam")


@dataclass(frozen=True)
class FitConfig:
    """How to train a model: the seed LSTM-AE's Keras settings are the defaults."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    # Early stopping on the validation loss; the best epoch's weights are restored.
    patience: int = 10
    # ReduceLROnPlateau on the validation loss.
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-4
    seed: int = 0
    # "auto", "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # How Keras' EarlyStopping judged telemanom's training, for recipes that follow it: a
    # validation loss counts as better only when it falls by more than ``min_delta``;
    # ``restore_best = False`` ends with the last epoch's weights, as Keras did without
    # ``restore_best_weights``; ``lr_schedule = False`` keeps the learning rate fixed.
    min_delta: float = 0.0
    restore_best: bool = True
    lr_schedule: bool = True
    # "adam" is torch's; "keras_adam" is Keras 2.1's (ε = 1e-7 on the uncorrected √v,
    # models/keras_adam.py), the optimizer telemanom's network was trained with.
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.patience < 1 or self.lr_patience < 0:
            raise ValueError("patience must be at least 1 and lr_patience at least 0")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {self.lr_factor}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be at least 0, got {self.min_delta}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for name in ("restore_best", "lr_schedule"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        # The Keras-following settings are written only when they differ from the default:
        # score caches are keyed by this dict, and every cache made before they existed
        # was trained the default way.
        described = asdict(self)
        for name in _WRITTEN_WHEN_SET:
            if described[name] == _FIT_DEFAULTS[name]:
                del described[name]
        return described


_WRITTEN_WHEN_SET = ("min_delta", "restore_best", "lr_schedule", "optimizer")
_FIT_DEFAULTS = {name: FitConfig.__dataclass_fields__[name].default for name in _WRITTEN_WHEN_SET}


@dataclass
class FitHistory:
    """What happened during ``fit``: one loss per epoch run."""

    train_loss: list[float] = field(default_factory=list)
    # Empty when there was no validation data; early stopping then watched the train loss.
    val_loss: list[float] = field(default_factory=list)
    # Learning rate in force during each epoch.
    learning_rates: list[float] = field(default_factory=list)
    # 0-based index of the epoch whose weights the model holds after fit.
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    # An ensemble's members' own histories (to_dict()), one per member; empty otherwise.
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epochs": self.epochs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The history ``to_dict`` wrote (its derived ``epochs`` is dropped)."""
        return cls(**{k: v for k, v in data.items() if k != "epochs"})


def checked_score_features(columns: list[int], n_features: int) -> list[int]:
    """``columns`` as ints; ValueError unless it is a non-empty list of column indices."""
    checked = [int(f) for f in columns]
    if not checked or not all(0 <= f < n_features for f in checked):
        raise ValueError(
            f"score_features must be column indices in [0, {n_features}), got {checked}"
        )
    return checked


def checked_n_predictions(n_predictions: int, window: int) -> int:
    """``n_predictions`` as an int; ValueError unless the window keeps a step of history."""
    if not 1 <= int(n_predictions) < window:
        raise ValueError(
            f"n_predictions must lie in [1, window - 1] = [1, {window - 1}], "
            f"got {n_predictions}: the window must leave at least one step of history"
        )
    return int(n_predictions)


@dataclass(frozen=True)
class RecipeDefaults:
    """How `train` and `evaluate` train a kind when the command line does not say."""

    window: int = 100
    scaling: str = "standard"  # "standard" or "none" (see training.trainer)
    epochs: int = 100
    patience: int = 10
    batch_size: int = 32
    train_stride: int = 1
    split: str = "chronological"  # which windows validate: see training.trainer


class Detector(abc.ABC):
    """A model that turns windows of shape (window, n_features) into anomaly scores.

    Inputs are windows already standardised by the training scaler, float32 of shape
    (B, window, n_features). Scores are float32 of shape (B,), higher meaning more anomalous;
    their scale is the model's own (thresholds are calibrated on the training scores).
    Subclasses take their hyperparameters as keyword arguments with defaults, and report
    them back through ``hyperparameters`` so that ``build_detector`` can rebuild them.
    """

    kind: ClassVar[str]
    recipe_defaults: ClassVar[RecipeDefaults] = RecipeDefaults()
    # True where every score is an error's size (absolute or squared), never below zero: what
    # an ensemble's geometric mean needs of its members.
    nonnegative_scores: ClassVar[bool] = False

    def __init__(self, window: int, n_features: int, **hyperparameters: Any) -> None:
        if window < 1 or n_features < 1:
            raise ValueError(
                f"window and n_features must be at least 1, got {window} and {n_features}"
            )
        if hyperparameters:
            raise TypeError(f"unexpected hyperparameters: {sorted(hyperparameters)}")
        self.window = window
        self.n_features = n_features
        self.device = torch.device("cpu")

    @property
    @abc.abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this detector (window and n_features aside)."""

    @abc.abstractmethod
    def to(self, device: str | torch.device) -> Self:
        """Move the weights to ``device`` and remember it in ``self.device``."""

    @abc.abstractmethod
    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None,
        config: FitConfig,
        progress: bool = True,
    ) -> FitHistory:
        """Train on scaled windows (N, window, n_features); ``val`` may be None or empty."""

    @abc.abstractmethod
    def score(self, windows: np.ndarray) -> np.ndarray:
        """Scores (B,) float32 of scaled windows (B, window, n_features), in one model call.

        Deterministic, in eval mode, and per window: a batch scores the same as its windows
        one by one (up to float rounding).
        """

    def contributions(self, windows: np.ndarray) -> np.ndarray | None:
        """Per-feature share of each window's score (B, n_features); None if the model has none."""
        return None

    def score_and_contributions(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Both at once; models that get both from one forward pass override this."""
        return self.score(windows), self.contributions(windows)

    def score_in_batches(self, windows: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Scores of many windows, ``batch_size`` per model call, so memory stays bounded."""
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        parts = [
            self.score(windows[start : start + batch_size])
            for start in range(0, len(windows), batch_size)
        ]
        return np.concatenate(parts)

    @abc.abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The learned weights, keyed by name."""

    @abc.abstractmethod
    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the weights; raises if names or shapes do not match."""

    def check_windows(self, windows: np.ndarray) -> None:
        """Raise ValueError unless ``windows`` has shape (B, window, n_features)."""
        if windows.ndim != 3 or windows.shape[1:] != (self.window, self.n_features):
            raise ValueError(
                f"{self.kind} expects windows of shape (B, {self.window}, {self.n_features}), "
                f"got {windows.shape}"
            )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return (
            f"{type(self).__name__}(window={self.window}, n_features={self.n_features}"
            f"{', ' if params else ''}{params})"
        )


_REGISTRY: dict[str, type[Detector]] = {}
DetectorClass = TypeVar("DetectorClass", bound=type[Detector])


def register(cls: DetectorClass) -> DetectorClass:
    """Class decorator: make ``cls`` available by its ``kind``."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute `kind`")
    existing = _REGISTRY.get(kind)
    if existing is not None and existing is not cls:
        raise ValueError(f"detector kind {kind!r} is already registered by {existing.__name__}")
    _REGISTRY[kind] = cls
    return cls


def available_detectors() -> list[str]:
    """The registered kinds, sorted."""
    return sorted(_REGISTRY)


def get_detector_class(kind: str) -> type[Detector]:
    """The class registered as ``kind``; KeyError naming the available kinds otherwise."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        available = ", ".join(available_detectors()) or "none"
        raise KeyError(f"unknown detector kind {kind!r}; available: {available}") from None


def accepted_hyperparameters(kind: str) -> list[str]:
    """The hyperparameter names a ``kind``'s constructor takes (besides window, n_features)."""
    return [
        name
        for name, param in inspect.signature(get_detector_class(kind).__init__).parameters.items()
        if name not in ("self", "window", "n_features")
        and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)
    ]


def build_detector(kind: str, window: int, n_features: int, **hyperparameters: Any) -> Detector:
    """A fresh, untrained detector of ``kind``; ValueError for hyperparameters it does not take."""
    cls = get_detector_class(kind)
    accepted = accepted_hyperparameters(kind)
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown hyperparameters for {kind!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(window, n_features, **hyperparameters)
