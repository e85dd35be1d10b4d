"""A variational autoencoder on the flattened window (``kind = "vae"``, chapter §4.2).

Encoder: Linear + ReLU layers (256-128 by default) on the flattened window, then two
Linear heads for the posterior mean μ and log-variance log σ² of a ``latent``-wide z.
Decoder: Linear + ReLU layers mirroring the encoder, then a linear output of
window × n_features values. Training samples z = μ + σ·ε (the reparameterisation trick)
and minimises reconstruction + β·KL(q(z|x) ‖ N(0, I)).

Score: the same quantity per window, reconstruction error + β·KL, made deterministic by
decoding μ instead of a sample (no randomness at score time, so a batch scores exactly as
its windows one by one). The validation loss is computed the same way, so the mean score
over the validation windows is the validation loss.

Scales, where the chapter is silent or does not fit: the chapter sums a binary
cross-entropy over all inputs (its data lie in [0, 1]); our windows are standardised, so the
reconstruction term is the squared error, and like every reconstruction detector here we
report it as a mean over the window's T·F values. To keep the chapter's balance between the
two terms (sum of errors + β·KL) we divide the KL by the same T·F:
``score = mean squared error + β · KL / (T·F)``. The output layer is linear for the same
reason as in ``dense_ae``. ``score_features`` / ``score_last`` narrow the reconstruction
term only; the KL belongs to the whole window.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.reconstruction import ReconstructionDetector
from stream_detector.models.torch_training import windows_to_tensor

__all__ = ["VAENetwork", "VariationalAutoencoder", "gaussian_kl"]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per row, summed over the latent dimensions: (B, J) -> (B,)."""
    return -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)


class VAENetwork(nn.Module):
    """Encoder to (μ, log σ²), decoder from z; ``forward`` is the reconstruction."""

    def __init__(self, window: int, n_features: int, hidden: list[int], latent: int) -> None:
        super().__init__()
        sizes = [window * n_features, *hidden]
        encoder: list[nn.Module] = []
        for size_in, size_out in itertools.pairwise(sizes):
            encoder += [nn.Linear(size_in, size_out), nn.ReLU()]
        self.encoder = nn.Sequential(*encoder)
        self.to_mu = nn.Linear(hidden[-1], latent)
        self.to_logvar = nn.Linear(hidden[-1], latent)
        decoder: list[nn.Module] = []
        mirrored = [latent, *hidden[::-1]]
        for size_in, size_out in itertools.pairwise(mirrored):
            decoder += [nn.Linear(size_in, size_out), nn.ReLU()]
        decoder.append(nn.Linear(hidden[0], window * n_features))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) -> μ and log σ², each (B, latent)."""
        hidden = self.encoder(x.reshape(x.shape[0], -1))
        return self.to_mu(hidden), self.to_logvar(hidden)

    def decode(self, z: torch.Tensor, steps: int, features: int) -> torch.Tensor:
        """(B, latent) -> (B, steps, features)."""
        return self.decoder(z).reshape(z.shape[0], steps, features)

    def latent_sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A sample z = μ + σ·ε while training; μ itself in eval mode, so scoring is exact."""
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction (B, T, F) and the KL term per window (B,)."""
        mu, logvar = self.encode(x)
        z = self.latent_sample(mu, logvar)
        return self.decode(z, x.shape[1], x.shape[2]), gaussian_kl(mu, logvar)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)[0]


@register
class VariationalAutoencoder(ReconstructionDetector):
    """Dense VAE on flattened windows, scored by reconstruction error + β·KL (μ decoded)."""

    kind = "vae"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden: list[int] | None = None,
        latent: int = 32,
        beta: float = 1.0,
        score_features: list[int] | None = None,
        score_last: int | None = None,
    ) -> None:
        hidden = [256, 128] if hidden is None else [int(size) for size in hidden]
        if not hidden or min(hidden) < 1 or latent < 1:
            raise ValueError(f"hidden sizes and latent must be positive, got {hidden}, {latent}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.hidden = hidden
        self.latent = latent
        self.beta = float(beta)
        super().__init__(window, n_features, score_features=score_features, score_last=score_last)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "latent": self.latent,
            "beta": self.beta,
            **self.scoring_hyperparameters,
        }

    def build_network(self) -> nn.Module:
        return VAENetwork(self.window, self.n_features, self.hidden, self.latent)

    @property
    def _kl_weight(self) -> float:
        # β per reconstructed value: the chapter's sum-of-errors + β·KL, divided by T·F.
        return self.beta / (self.window * self.n_features)

    def _batch_loss(self, network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of (reconstruction MSE + β·KL / (T·F)), the negative ELBO's scale."""
        assert isinstance(network, VAENetwork)
        reconstruction, kl = network.reconstruct(batch)
        mse = torch.mean((reconstruction - batch) ** 2, dim=(1, 2))
        return torch.mean(mse + self._kl_weight * kl)

    def _error_and_kl(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, n_features) squared error of the decoded μ, and (B,) KL, in one pass."""
        self.check_windows(windows)
        if len(windows) == 0:
            return np.zeros((0, self.n_features), np.float32), np.zeros(0, np.float32)
        network = self.network
        assert isinstance(network, VAENetwork)
        network.eval()
        with torch.inference_mode():
            batch = windows_to_tensor(windows, self.device)
            reconstruction, kl = network.reconstruct(batch)
            error = (reconstruction - batch) ** 2
            if self.score_last is not None:
                error = error[:, -self.score_last :, :]
            return (
                error.mean(dim=1).float().cpu().numpy(),
                kl.float().cpu().numpy(),
            )

    def score(self, windows: np.ndarray) -> np.ndarray:
        per_feature, kl = self._error_and_kl(windows)
        return (self._score_from(per_feature) + np.float32(self._kl_weight) * kl).astype(np.float32)

    def score_and_contributions(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores, and each feature's share of the reconstruction part (KL has no features)."""
        per_feature, kl = self._error_and_kl(windows)
        scores = (self._score_from(per_feature) + np.float32(self._kl_weight) * kl).astype(
            np.float32
        )
        return scores, self._shares(per_feature)
