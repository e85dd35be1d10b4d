"""MAD-GAN (Li et al. 2019): recurrent generator and discriminator on multivariate windows.

Networks: generator G (LSTM reading a noise sequence z of shape (T, ``noise``) -> features
at every step) and discriminator D (LSTM over the window -> one logit per step, averaged to
one per window). Training: the original GAN on normal windows. Score: invert x to a noise
sequence by ``inversion_steps`` Adam steps on z (from a fixed start) minimising the mean
squared residual ‖x − G(z)‖²; then (1 − λ) · residual + λ · (1 − D(x)), D(x) the
probability that x is real. The paper inverts with many small steps (lr 1e-4); we default
to few large ones so that a stream can be scored on a CPU.

"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.gans.detector import PlainGAN, search_latent

__all__ = ["MADGAN", "LSTMSequenceDiscriminator", "LSTMSequenceGenerator"]


class LSTMSequenceGenerator(nn.Module):
    """(B, T, noise) -> (B, T, F)."""

    def __init__(self, noise: int, hidden: int, n_features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(noise, hidden, batch_first=True)
        self.to_features = nn.Linear(hidden, n_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(z)
        return self.to_features(sequence)


class LSTMSequenceDiscriminator(nn.Module):
    """(B, T, F) -> (B,) the mean over steps of a per-step logit."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.to_logit = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(x)
        return self.to_logit(sequence).squeeze(2).mean(dim=1)


@register
class MADGAN(PlainGAN):
    """LSTM GAN; score = residual after inverting x to noise, plus D's doubt."""

    kind = "madgan"
    min_score_batch = 16

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        noise: int = 8,
        hidden: int = 64,
        discriminator_weight: float = 0.1,
        inversion_steps: int = 10,
        inversion_lr: float = 0.1,
        inversion_seed: int = 0,
        score_features: list[int] | None = None,
    ) -> None:
        if min(noise, hidden) < 1 or inversion_steps < 0:
            raise ValueError("noise and hidden must be at least 1, inversion_steps at least 0")
        if not 0 <= discriminator_weight <= 1:
            raise ValueError(f"discriminator_weight must lie in [0, 1], got {discriminator_weight}")
        if inversion_lr < 0:
            raise ValueError(f"inversion_lr must be non-negative, got {inversion_lr}")
        self.noise = noise
        self.hidden = hidden
        self.discriminator_weight = discriminator_weight
        self.inversion_steps = inversion_steps
        self.inversion_lr = inversion_lr
        self.inversion_seed = inversion_seed
        super().__init__(window, n_features, score_features)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "hidden": self.hidden,
            "discriminator_weight": self.discriminator_weight,
            "inversion_steps": self.inversion_steps,
            "inversion_lr": self.inversion_lr,
            "inversion_seed": self.inversion_seed,
            "score_features": self.score_features,
        }

    def build_networks(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "generator": LSTMSequenceGenerator(self.noise, self.hidden, self.n_features),
                "discriminator": LSTMSequenceDiscriminator(self.n_features, self.hidden),
            }
        )

    def sample_noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.window, self.noise, device=device)

    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        generator = self.networks["generator"]

        def residual(code: torch.Tensor) -> torch.Tensor:
            return self.scored_columns((batch - generator(code)) ** 2).mean(dim=(1, 2))

        start = torch.randn(
            self.window, self.noise, generator=torch.Generator().manual_seed(self.inversion_seed)
        )
        codes = start.to(batch.device).expand(len(batch), -1, -1)
        inverted = search_latent(residual, codes, self.inversion_steps, self.inversion_lr)
        with torch.no_grad():
            doubt = 1 - torch.sigmoid(self.networks["discriminator"](batch))
            return (1 - self.discriminator_weight) * residual(inverted) + (
                self.discriminator_weight * doubt
            )
