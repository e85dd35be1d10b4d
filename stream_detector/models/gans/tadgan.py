"""TadGAN (Geiger et al. 2020): an LSTM encoder/decoder trained as a Wasserstein GAN.

Networks: encoder E (LSTM over the window -> latent), decoder G (latent repeated for every
step -> LSTM -> features), critic C_x (1-D convolutions; real windows against G(z),
z ~ N(0, I)) and critic C_z (MLP; latent draws z against E(x)). Training: ``n_critic``
WGAN-GP updates of both critics per generator update; the generator (E and G together)
minimises ``reconstruction_weight`` · MSE(x, G(E(x))) − C_x(G(z)) − C_z(E(x)).

Score: (1 − λ) · ‖x − G(E(x))‖² + λ · z(C_x(x)), where z is the robust z-score of
``RobustZScore`` (|c − mean of the inter-quartile training scores| / std + 1). For a
stream its statistics come from the critic scores of the *training* windows, stored with
the weights, never from the batch being scored. The reconstruction error is the squared
norm over the whole window (a sum, not a mean) so that it is on the same per-window scale
as the unit-free z-score; ``score_features`` narrows it to chosen columns (the critic
always judges the whole window). The paper's centred rolling mean over scores is left out: it
looks at windows after the one being scored, which a stream does not have yet.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.gans.beatgan import ConvFeatures1d
from stream_detector.models.gans.detector import GANDetector, RobustZScore
from stream_detector.models.gans.training import GAN_BETAS, gradient_penalty
from stream_detector.models.torch_training import windows_to_tensor

__all__ = [
    "ConvWindowCritic",
    "LSTMWindowDecoder",
    "LSTMWindowEncoder",
    "LatentCritic",
    "TadGAN",
]

# Training windows are scored for the critic statistics in chunks this large.
_STATISTICS_BATCH = 1024


class LSTMWindowEncoder(nn.Module):
    """(B, T, F) -> (B, latent): an LSTM's last hidden state, projected."""

    def __init__(self, n_features: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (last_hidden, _) = self.lstm(x)
        return self.to_latent(last_hidden[-1])


class LSTMWindowDecoder(nn.Module):
    """(B, latent) -> (B, T, F): the latent vector read at every step by an LSTM."""

    def __init__(self, latent: int, hidden: int, n_features: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.lstm = nn.LSTM(latent, hidden, batch_first=True)
        self.to_features = nn.Linear(hidden, n_features)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(latent.unsqueeze(1).expand(-1, self.window, -1))
        return self.to_features(sequence)


class ConvWindowCritic(nn.Module):
    """(B, T, F) -> (B,) Wasserstein critic score; high means "looks like training data"."""

    def __init__(self, window: int, n_features: int, hidden: int) -> None:
        super().__init__()
        # Convolutions, not an LSTM: the gradient penalty differentiates the critic twice.
        self.features = ConvFeatures1d(window, n_features, hidden)
        self.to_score = nn.Linear(self.features.size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_score(self.features(x)).squeeze(1)


class LatentCritic(nn.Module):
    """(B, latent) -> (B,) Wasserstein critic score of latent codes."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
        )
        self.to_score = nn.Linear(hidden, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_score(self.features(z)).squeeze(1)


@register
class TadGAN(GANDetector):
    """WGAN-GP with an LSTM encoder/decoder generator and critics on windows and latents."""

    kind = "tadgan"
    train_loss_name = "reconstruction_mse"

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        hidden: int = 64,
        latent: int = 16,
        critic_hidden: int = 32,
        n_critic: int = 5,
        gradient_penalty_weight: float = 10.0,
        reconstruction_weight: float = 10.0,
        critic_weight: float = 0.1,
        score_features: list[int] | None = None,
    ) -> None:
        if min(hidden, latent, critic_hidden, n_critic) < 1:
            raise ValueError("hidden, latent, critic_hidden and n_critic must be at least 1")
        if not 0 <= critic_weight <= 1:
            raise ValueError(f"critic_weight must lie in [0, 1], got {critic_weight}")
        if gradient_penalty_weight < 0 or reconstruction_weight < 0:
            raise ValueError("loss weights must be non-negative")
        self.hidden = hidden
        self.latent = latent
        self.critic_hidden = critic_hidden
        self.n_critic = n_critic
        self.gradient_penalty_weight = gradient_penalty_weight
        self.reconstruction_weight = reconstruction_weight
        self.critic_weight = critic_weight
        super().__init__(window, n_features, score_features)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "latent": self.latent,
            "critic_hidden": self.critic_hidden,
            "n_critic": self.n_critic,
            "gradient_penalty_weight": self.gradient_penalty_weight,
            "reconstruction_weight": self.reconstruction_weight,
            "critic_weight": self.critic_weight,
            "score_features": self.score_features,
        }

    def build_networks(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "encoder": LSTMWindowEncoder(self.n_features, self.hidden, self.latent),
                "decoder": LSTMWindowDecoder(
                    self.latent, self.hidden, self.n_features, self.window
                ),
                "critic_x": ConvWindowCritic(self.window, self.n_features, self.critic_hidden),
                "critic_z": LatentCritic(self.latent, self.critic_hidden),
                "critic_x_statistics": RobustZScore(),
            }
        )

    @property
    def critic_x(self) -> ConvWindowCritic:
        return cast(ConvWindowCritic, self.networks["critic_x"])

    @property
    def critic_z(self) -> LatentCritic:
        return cast(LatentCritic, self.networks["critic_z"])

    @property
    def critic_x_statistics(self) -> RobustZScore:
        return cast(RobustZScore, self.networks["critic_x_statistics"])

    def generator_parameters(self) -> list[nn.Parameter]:
        """What the generator update trains: encoder and decoder."""
        return [*self.networks["encoder"].parameters(), *self.networks["decoder"].parameters()]

    def configure_optimizers(self, lr: float) -> None:
        self.optimizers = {
            name: torch.optim.Adam(params, lr=lr, betas=GAN_BETAS)
            for name, params in (
                ("generator", self.generator_parameters()),
                ("critic_x", list(self.networks["critic_x"].parameters())),
                ("critic_z", list(self.networks["critic_z"].parameters())),
            )
        }

    def _step(self, name: str, loss: torch.Tensor) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[name].step()

    def train_critics(self, batch: torch.Tensor) -> None:
        """``n_critic`` WGAN-GP updates of C_x and C_z on this batch, fresh noise each time."""
        encoder, decoder = self.networks["encoder"], self.networks["decoder"]
        critic_x, critic_z = self.networks["critic_x"], self.networks["critic_z"]
        for _ in range(self.n_critic):
            noise = torch.randn(len(batch), self.latent, device=batch.device)
            with torch.no_grad():
                generated = decoder(noise)
                encoded = encoder(batch)
            loss_x = critic_x(generated).mean() - critic_x(batch).mean()
            loss_x = loss_x + self.gradient_penalty_weight * gradient_penalty(
                critic_x, batch, generated
            )
            self._step("critic_x", loss_x)
            loss_z = critic_z(encoded).mean() - critic_z(noise).mean()
            loss_z = loss_z + self.gradient_penalty_weight * gradient_penalty(
                critic_z, noise, encoded
            )
            self._step("critic_z", loss_z)

    def train_step(self, batch: torch.Tensor) -> float:
        self.train_critics(batch)
        encoder, decoder = self.networks["encoder"], self.networks["decoder"]
        noise = torch.randn(len(batch), self.latent, device=batch.device)
        encoded = encoder(batch)
        reconstruction_loss = F.mse_loss(decoder(encoded), batch)
        adversarial = (
            -self.networks["critic_x"](decoder(noise)).mean()
            - self.networks["critic_z"](encoded).mean()
        )
        self._step("generator", self.reconstruction_weight * reconstruction_loss + adversarial)
        return float(reconstruction_loss.detach())

    def end_epoch(self, train: np.ndarray) -> None:
        """Store the robust z-score statistics of the critic's scores on the training windows."""
        critic_x = self.critic_x
        with torch.inference_mode():
            scores = torch.cat(
                [
                    critic_x(
                        windows_to_tensor(train[start : start + _STATISTICS_BATCH], self.device)
                    )
                    for start in range(0, len(train), _STATISTICS_BATCH)
                ]
            )
        self.critic_x_statistics.fit(scores)

    def critic_z_score(self, batch: torch.Tensor) -> torch.Tensor:
        """(B,) C_x's score of each window as a robust z-score against the training scores."""
        return self.critic_x_statistics(self.critic_x(batch))

    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            reconstruction = self.networks["decoder"](self.networks["encoder"](batch))
            error = self.scored_columns((reconstruction - batch) ** 2).sum(dim=(1, 2))
            critic = self.critic_z_score(batch)
            return (1 - self.critic_weight) * error + self.critic_weight * critic
