"""What the GAN detectors share: networks in one ModuleDict, the adversarial fit, scoring.

A GAN detector keeps every network it has (generators, discriminators, critics, encoders)
and every statistic its score needs in ``self.networks``, so ``state_dict`` holds all of it
and a loaded checkpoint scores exactly like the trained model. A subclass builds the
networks, says how to update them on one batch (``train_step``) and how to score a batch
(``score_tensor``); ``fit`` runs the shared loop in ``training``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar, Self

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
from stream_detector.models.gans.training import adam, fit_adversarial, standard_gan_step
from stream_detector.models.torch_training import windows_to_tensor

__all__ = ["GANDetector", "RobustZScore", "search_latent"]


class GANDetector(Detector, abc.ABC):
    """A detector made of several networks trained against each other."""

    # Which loss ``train_step`` returns, e.g. "discriminator_loss" or "reconstruction_mse".
    train_loss_name: ClassVar[str]
    # Batches smaller than this are padded with zero windows before scoring. Matrix
    # products over one or two rows take other kernels (other rounding) than over many;
    # models that optimise a latent code per window amplify that rounding into visibly
    # different scores, so they set this to keep a window's score independent of its batch.
    min_score_batch: ClassVar[int] = 1

    def __init__(
        self, window: int, n_features: int, score_features: list[int] | None = None
    ) -> None:
        super().__init__(window, n_features)
        if score_features is not None:
            score_features = checked_score_features(score_features, n_features)
        # Columns whose errors the score reads (SMAP/MSL: [0], the telemetry value, where
        # the other columns are command flags); None means all. The networks always see
        # and generate every column.
        self.score_features = score_features
        self.networks = self.build_networks()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @abc.abstractmethod
    def build_networks(self) -> nn.ModuleDict:
        """Fresh networks (and statistics modules) for the window shape and hyperparameters."""

    @abc.abstractmethod
    def configure_optimizers(self, lr: float) -> None:
        """Fill ``self.optimizers`` for a fit at learning rate ``lr``."""

    @abc.abstractmethod
    def train_step(self, batch: torch.Tensor) -> float:
        """Update the networks on one batch; return the loss ``train_loss_name`` names."""

    def end_epoch(self, train: np.ndarray) -> None:
        """After each epoch, with networks in eval mode: refresh stored statistics."""

    @abc.abstractmethod
    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of a batch already on the device; networks are in eval mode."""

    def scored_columns(self, error: torch.Tensor) -> torch.Tensor:
        """``error`` (B, T, F) narrowed to the ``score_features`` columns."""
        if self.score_features is None:
            return error
        return error[:, :, self.score_features]

    def to(self, device: str | torch.device) -> Self:
        self.device = resolve_device(device)
        self.networks.to(self.device)
        return self

    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None,
        config: FitConfig,
        progress: bool = True,
    ) -> FitHistory:
        self.check_windows(train)
        if val is not None and len(val) > 0:
            self.check_windows(val)
        self.to(config.device)
        try:
            return fit_adversarial(self, train, val, config, progress=progress)
        finally:
            # Optimiser state is only needed while training; do not keep it alive.
            self.optimizers = {}

    def score(self, windows: np.ndarray) -> np.ndarray:
        self.check_windows(windows)
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        self.networks.eval()
        count = len(windows)
        batch = windows_to_tensor(windows, self.device)
        if count < self.min_score_batch:
            padding = batch.new_zeros((self.min_score_batch - count, *batch.shape[1:]))
            batch = torch.cat([batch, padding])
        return self.score_tensor(batch)[:count].detach().float().cpu().numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.networks.state_dict())

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.networks.load_state_dict(state_dict, strict=True)


class PlainGAN(GANDetector):
    """A generator and a discriminator (networks "generator" and "discriminator") trained
    with the original GAN loss; a subclass builds them and draws the generator's noise."""

    train_loss_name = "discriminator_loss"

    @abc.abstractmethod
    def sample_noise(self, n: int, device: torch.device) -> torch.Tensor:
        """Generator inputs for ``n`` fakes."""

    def configure_optimizers(self, lr: float) -> None:
        self.optimizers = {
            "generator": adam(self.networks["generator"], lr),
            "discriminator": adam(self.networks["discriminator"], lr),
        }

    def train_step(self, batch: torch.Tensor) -> float:
        return standard_gan_step(
            self.networks["generator"],
            self.networks["discriminator"],
            batch,
            self.sample_noise(len(batch), batch.device),
            self.optimizers["generator"],
            self.optimizers["discriminator"],
        )


class RobustZScore(nn.Module):
    """|s − centre| / spread of a score, with centre and spread learned from training scores.

    TadGAN's critic-score processing: the centre is the mean of the scores between the first
    and third quartile, the spread the standard deviation of all of them; 1 is added so that
    the result is at least 1. The statistics are buffers, so they travel with the weights.
    """

    centre: torch.Tensor
    spread: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("centre", torch.zeros(()))
        self.register_buffer("spread", torch.ones(()))

    def fit(self, scores: torch.Tensor) -> None:
        values = scores.detach().double().flatten()
        low, high = torch.quantile(values, 0.25), torch.quantile(values, 0.75)
        middle = values[(values >= low) & (values <= high)]
        spread = values.std(unbiased=False)
        self.centre.fill_(float(middle.mean()))
        # A constant critic would divide by zero; any positive spread then gives z = 0 + 1.
        self.spread.fill_(float(spread) if float(spread) > 0 else 1.0)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.centre).abs() / self.spread + 1


def search_latent(
    loss_per_sample: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Latent codes (B, ...) that lower ``loss_per_sample`` after ``steps`` of Adam from ``start``.

    Each sample's code is optimised on its own: the summed loss gives every code exactly its
    own gradient, and Adam works element by element, so a sample ends at the same code
    whether it is scored alone or in a batch.
    """
    code = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([code], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            # Gradients for the code only: the networks' weights stay untouched.
            (code.grad,) = torch.autograd.grad(loss_per_sample(code).sum(), code)
            optimizer.step()
    return code.detach()
