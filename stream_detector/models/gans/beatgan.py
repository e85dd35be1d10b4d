"""BeatGAN (Zhou et al., IJCAI 2019): a 1-D convolutional autoencoder regularised by a GAN.

Generator: a 1-D conv encoder over time (features are channels) down to a latent vector, and
a decoder back to the window. Discriminator: a 1-D conv feature extractor and a linear
logit. Training: the discriminator learns real windows against reconstructions; the
generator minimises reconstruction MSE plus ``adversarial_weight`` times feature matching
(the MSE between D's features of the real window and of its reconstruction). Score: the
window's mean squared reconstruction error, as the paper scores beats (over the
``score_features`` columns when given).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.gans.detector import GANDetector
from stream_detector.models.gans.training import adam

__all__ = ["BeatGAN", "ConvFeatures1d", "ConvWindowAutoencoder"]


def _halved(length: int, times: int) -> int:
    """Length after ``times`` stride-2 convolutions with kernel 5, padding 2."""
    for _ in range(times):
        length = (length - 1) // 2 + 1
    return length


class ConvFeatures1d(nn.Module):
    """(B, T, F) -> (B, hidden · T/4) features from two stride-2 1-D convolutions."""

    def __init__(self, window: int, n_features: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv1d(n_features, hidden, 5, stride=2, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 5, stride=2, padding=2),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.size = hidden * _halved(window, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Conv1d wants channels first: features are the channels, time the length.
        return self.layers(x.transpose(1, 2))


class ConvWindowAutoencoder(nn.Module):
    """(B, T, F) -> (B, T, F) through a ``latent``-sized bottleneck, 1-D convolutions both ways."""

    def __init__(self, window: int, n_features: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.encoder = ConvFeatures1d(window, n_features, hidden)
        self.to_latent = nn.Linear(self.encoder.size, latent)
        self.hidden = hidden
        self.short = _halved(window, 2)
        self.from_latent = nn.Linear(latent, hidden * self.short)
        # Linear upsampling back to the window length keeps any window size valid,
        # where transposed convolutions would only fit lengths divisible by 4.
        self.upsample = nn.Upsample(size=window, mode="linear", align_corners=False)
        self.decoder = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 5, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, n_features, 5, padding=2),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        short = self.from_latent(latent).view(-1, self.hidden, self.short)
        return self.decoder(self.upsample(short)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class BeatDiscriminator(nn.Module):
    """(B, T, F) -> one logit per window; ``features`` are what feature matching compares."""

    def __init__(self, window: int, n_features: int, hidden: int) -> None:
        super().__init__()
        self.features = ConvFeatures1d(window, n_features, hidden)
        self.to_logit = nn.Linear(self.features.size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logit(self.features(x)).squeeze(1)


@register
class BeatGAN(GANDetector):
    """1-D conv autoencoder + 1-D conv discriminator; score = reconstruction MSE."""

    kind = "beatgan"
    train_loss_name = "reconstruction_mse"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden: int = 32,
        latent: int = 16,
        adversarial_weight: float = 1.0,
        score_features: list[int] | None = None,
    ) -> None:
        if min(hidden, latent) < 1:
            raise ValueError("hidden and latent must be at least 1")
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be non-negative, got {adversarial_weight}")
        self.hidden = hidden
        self.latent = latent
        self.adversarial_weight = adversarial_weight
        super().__init__(window, n_features, score_features)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "latent": self.latent,
            "adversarial_weight": self.adversarial_weight,
            "score_features": self.score_features,
        }

    def build_networks(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "generator": ConvWindowAutoencoder(
                    self.window, self.n_features, self.hidden, self.latent
                ),
                "discriminator": BeatDiscriminator(self.window, self.n_features, self.hidden),
            }
        )

    def configure_optimizers(self, lr: float) -> None:
        self.optimizers = {
            "generator": adam(self.networks["generator"], lr),
            "discriminator": adam(self.networks["discriminator"], lr),
        }

    def train_step(self, batch: torch.Tensor) -> float:
        generator = self.networks["generator"]
        discriminator = cast(BeatDiscriminator, self.networks["discriminator"])
        reconstruction = generator(batch)

        real_logits = discriminator(batch)
        fake_logits = discriminator(reconstruction.detach())
        discriminator_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.optimizers["discriminator"].step()

        reconstruction_loss = F.mse_loss(reconstruction, batch)
        feature_matching = F.mse_loss(
            discriminator.features(reconstruction), discriminator.features(batch).detach()
        )
        generator_loss = reconstruction_loss + self.adversarial_weight * feature_matching
        self.optimizers["generator"].zero_grad(set_to_none=True)
        generator_loss.backward()
        self.optimizers["generator"].step()
        return float(reconstruction_loss.detach())

    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            reconstruction = self.networks["generator"](batch)
            return self.scored_columns((reconstruction - batch) ** 2).mean(dim=(1, 2))
