"""A fully connected autoencoder on the flattened window (``kind = "dense_ae"``).

The chapter's §4.1 autoencoder: the (window, n_features) window is flattened to one
vector, an encoder of Linear + ReLU layers (128-64-32 by default) compresses it, and a
mirrored decoder (64-128) maps it back to window × n_features values. Score: mean squared
reconstruction error over the window, as every reconstruction detector here.

Where we depart from the chapter: its output layer ends in a sigmoid because its data lie
in [0, 1]; our windows are standardised (zero mean, unit variance, values well outside
[0, 1]), so the output layer is linear.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.reconstruction import ReconstructionDetector

__all__ = ["DenseAutoencoder", "DenseAutoencoderNetwork"]


class DenseAutoencoderNetwork(nn.Module):
    """(B, T, F) -> (B, T, F) through Linear/ReLU layers on the flattened window."""

    def __init__(self, window: int, n_features: int, hidden: list[int]) -> None:
        super().__init__()
        sizes = [window * n_features, *hidden]
        encoder: list[nn.Module] = []
        for size_in, size_out in itertools.pairwise(sizes):
            # The chapter puts a ReLU after every encoder layer, the bottleneck included.
            encoder += [nn.Linear(size_in, size_out), nn.ReLU()]
        decoder: list[nn.Module] = []
        mirrored = sizes[::-1]
        for size_in, size_out in itertools.pairwise(mirrored[:-1]):
            decoder += [nn.Linear(size_in, size_out), nn.ReLU()]
        decoder.append(nn.Linear(mirrored[-2], mirrored[-1]))
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, features = x.shape
        flat = x.reshape(batch, steps * features)
        return self.decoder(self.encoder(flat)).reshape(batch, steps, features)


@register
class DenseAutoencoder(ReconstructionDetector):
    """Fully connected autoencoder on flattened windows, scored by reconstruction error."""

    kind = "dense_ae"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden: list[int] | None = None,
        score_features: list[int] | None = None,
        score_last: int | None = None,
    ) -> None:
        hidden = [128, 64, 32] if hidden is None else [int(size) for size in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {hidden}")
        self.hidden = hidden
        super().__init__(window, n_features, score_features=score_features, score_last=score_last)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), **self.scoring_hyperparameters}

    def build_network(self) -> nn.Module:
        return DenseAutoencoderNetwork(self.window, self.n_features, self.hidden)
