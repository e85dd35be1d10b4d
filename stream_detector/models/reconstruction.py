"""Shared base of detectors that score a window by how badly a network reconstructs it.

The score is the mean squared error over the window (all steps, all features, as the seed
says); each feature's share of that error is its contribution. Two hyperparameters narrow
it: ``score_features`` (e.g. ``[0]``, the telemetry value of a SMAP/MSL channel, when the
other columns are command flags whose rare ones would dominate the error) and
``score_last`` (only the newest steps count, for a sharper, earlier score in a stream).
A subclass only builds the network.
"""

from __future__ import annotations

import abc
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from stream_detector.models.base import (
    Detector,
    FitConfig,
    FitHistory,
    checked_score_features,
    resolve_device,
)
from stream_detector.models.torch_training import fit_detector, windows_to_tensor

__all__ = ["ReconstructionDetector", "reconstruction_mse"]


def reconstruction_mse(network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a batch and its reconstruction: the training loss."""
    return torch.mean((network(batch) - batch) ** 2)


class ReconstructionDetector(Detector, abc.ABC):
    """A detector whose network maps (B, window, F) to a reconstruction of the same shape."""

    nonnegative_scores = True  # squared errors (the VAE adds a KL term, never negative)

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        score_features: list[int] | None = None,
        score_last: int | None = None,
    ) -> None:
        super().__init__(window, n_features)
        if score_features is not None:
            score_features = checked_score_features(score_features, n_features)
        if score_last is not None and not 1 <= score_last <= window:
            raise ValueError(f"score_last must lie in [1, {window}], got {score_last}")
        self.score_features = score_features
        self.score_last = score_last
        self.network = self.build_network()

    @property
    def scoring_hyperparameters(self) -> dict[str, Any]:
        return {"score_features": self.score_features, "score_last": self.score_last}

    @abc.abstractmethod
    def build_network(self) -> nn.Module:
        """A fresh network for ``self.window``, ``self.n_features`` and the hyperparameters."""

    def to(self, device: str | torch.device) -> Self:
        self.device = resolve_device(device)
        self.network.to(self.device)
        return self

    def _batch_loss(self, network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch; subclasses with another objective override it."""
        return reconstruction_mse(network, batch)

    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None,
        config: FitConfig,
        progress: bool = True,
    ) -> FitHistory:
        return fit_detector(self, self.network, train, val, config, self._batch_loss, progress)

    def _squared_error_per_feature(self, windows: np.ndarray) -> np.ndarray:
        """(B, n_features) mean squared error over time steps, float32 on the CPU."""
        self.check_windows(windows)
        if len(windows) == 0:
            return np.zeros((0, self.n_features), dtype=np.float32)
        self.network.eval()
        with torch.inference_mode():
            batch = windows_to_tensor(windows, self.device)
            error = (self.network(batch) - batch) ** 2
            if self.score_last is not None:
                error = error[:, -self.score_last :, :]
            return error.mean(dim=1).float().cpu().numpy()

    @staticmethod
    def _shares(per_feature: np.ndarray) -> np.ndarray:
        total = per_feature.sum(axis=1, keepdims=True)
        # A perfect reconstruction has nothing to attribute: all shares 0 rather than NaN.
        safe_total = np.where(total > 0, total, 1.0)
        return (per_feature / safe_total).astype(np.float32)

    def _score_from(self, per_feature: np.ndarray) -> np.ndarray:
        if self.score_features is not None:
            per_feature = per_feature[:, self.score_features]
        return per_feature.mean(axis=1, dtype=np.float32)

    def score(self, windows: np.ndarray) -> np.ndarray:
        return self._score_from(self._squared_error_per_feature(windows))

    def contributions(self, windows: np.ndarray) -> np.ndarray:
        """Each feature's share of the window's squared error; rows sum to 1."""
        return self._shares(self._squared_error_per_feature(windows))

    def score_and_contributions(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_feature = self._squared_error_per_feature(windows)
        return self._score_from(per_feature), self._shares(per_feature)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.network.state_dict())

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state_dict, strict=True)
