"""RegGAN (the gan-models-multivariate seed's own model): TadGAN plus a latent regulariser.

Networks: TadGAN's encoder E, decoder G, critics C_x and C_z, and an auxiliary encoder E'
(another LSTM encoder) that maps a reconstruction G(E(x)) back to latent space. Training:
the critics as in TadGAN (WGAN-GP, ``n_critic`` updates per generator update); E, G and
E' together minimise

    w_E · ‖E(x) − E'(G(E(x)))‖ + w_rec · MSE(x, G(E(x))) + w_cx · FM(C_x) + w_cz · FM(C_z)

where FM is feature matching: the squared distance between the batch means of a critic's
hidden features on real inputs (x; z ~ N(0, I)) and on generated ones (G(z); E(x)).
Score: (1 − λ) · ‖E'(G(E(x))) − E(x)‖ + λ · the robust z-score of C_x(x), with its
statistics from the training windows as in TadGAN (no non-causal smoothing either).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.gans.tadgan import LSTMWindowEncoder, TadGAN

__all__ = ["RegGAN"]


def _feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Squared distance between the batch means of two sets of features (real is a target)."""
    return F.mse_loss(fake_features.mean(dim=0), real_features.mean(dim=0).detach())


@register
class RegGAN(TadGAN):
    """TadGAN's layout plus an auxiliary encoder; score = latent reconstruction error."""

    kind = "reggan"
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
        latent_weight: float = 1.0,
        reconstruction_weight: float = 10.0,
        critic_x_matching_weight: float = 1.0,
        critic_z_matching_weight: float = 1.0,
        critic_weight: float = 0.1,
        score_features: list[int] | None = None,
    ) -> None:
        if score_features is not None:
            # The latent error has no columns to choose from.
            raise ValueError("reggan scores latent codes: score_features does not apply")
        if min(latent_weight, critic_x_matching_weight, critic_z_matching_weight) < 0:
            raise ValueError("loss weights must be non-negative")
        self.latent_weight = latent_weight
        self.critic_x_matching_weight = critic_x_matching_weight
        self.critic_z_matching_weight = critic_z_matching_weight
        super().__init__(
            window,
            n_features,
            hidden=hidden,
            latent=latent,
            critic_hidden=critic_hidden,
            n_critic=n_critic,
            gradient_penalty_weight=gradient_penalty_weight,
            reconstruction_weight=reconstruction_weight,
            critic_weight=critic_weight,
        )

    @property
    def hyperparameters(self) -> dict[str, Any]:
        inherited = super().hyperparameters
        del inherited["score_features"]
        return {
            **inherited,
            "latent_weight": self.latent_weight,
            "critic_x_matching_weight": self.critic_x_matching_weight,
            "critic_z_matching_weight": self.critic_z_matching_weight,
        }

    def build_networks(self) -> nn.ModuleDict:
        networks = super().build_networks()
        networks["auxiliary_encoder"] = LSTMWindowEncoder(self.n_features, self.hidden, self.latent)
        return networks

    def generator_parameters(self) -> list[nn.Parameter]:
        """E, G and E': the auxiliary encoder learns from the same latent loss."""
        return [*super().generator_parameters(), *self.networks["auxiliary_encoder"].parameters()]

    def train_step(self, batch: torch.Tensor) -> float:
        self.train_critics(batch)
        encoder, decoder = self.networks["encoder"], self.networks["decoder"]
        critic_x, critic_z = self.critic_x, self.critic_z
        noise = torch.randn(len(batch), self.latent, device=batch.device)
        encoded = encoder(batch)
        reconstruction = decoder(encoded)
        latent_error = (encoded - self.networks["auxiliary_encoder"](reconstruction)).norm(dim=1)
        reconstruction_loss = F.mse_loss(reconstruction, batch)
        loss = (
            self.latent_weight * latent_error.mean()
            + self.reconstruction_weight * reconstruction_loss
            + self.critic_x_matching_weight
            * _feature_matching(critic_x.features(batch), critic_x.features(decoder(noise)))
            + self.critic_z_matching_weight
            * _feature_matching(critic_z.features(noise), critic_z.features(encoded))
        )
        self._step("generator", loss)
        return float(reconstruction_loss.detach())

    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            encoded = self.networks["encoder"](batch)
            re_encoded = self.networks["auxiliary_encoder"](self.networks["decoder"](encoded))
            latent_error = (re_encoded - encoded).norm(dim=1)
            critic = self.critic_z_score(batch)
            return (1 - self.critic_weight) * latent_error + self.critic_weight * critic
