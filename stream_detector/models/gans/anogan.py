"""AnoGAN (Schlegl et al. 2017; chapter §4.3): a plain GAN, scored by searching its latent space.

Networks: generator G (MLP, z -> window) and discriminator D (MLP whose last hidden layer
is the feature map f). Training: the original GAN on normal windows. Score: starting from
a fixed code z₀, ``search_steps`` Adam steps on z lower

    (1 − λ) · mean((x − G(z))²) + λ · mean(|f(x) − f(G(z))|)

and the score is that loss at the final z. Every window starts from the same z₀ and is
optimised on its own, so its score does not depend on the rest of the batch.

The chapter's residual is the mean *absolute* error (``residual="absolute"``). We square it
by default: a fault in telemetry is often one step of a window, and a mean absolute error
dilutes a +6 spike in a 60-value window to 0.1, below the GAN's error on normal windows,
where its square (0.6) stands out — as in every other reconstruction score here.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from stream_detector.models.base import register
from stream_detector.models.gans.detector import PlainGAN, search_latent
from stream_detector.models.gans.latent_search_gan import MLPDiscriminator, mlp_gan_networks

__all__ = ["AnoGAN"]


@register
class AnoGAN(PlainGAN):
    """Generator + feature discriminator; score = residual and feature loss after a z search."""

    kind = "anogan"
    min_score_batch = 16

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        latent: int = 16,
        hidden: int = 128,
        feature_weight: float = 0.1,
        search_steps: int = 50,
        search_lr: float = 0.1,
        search_seed: int = 0,
        residual: str = "squared",
        score_features: list[int] | None = None,
    ) -> None:
        if residual not in ("absolute", "squared"):
            raise ValueError(f"residual must be 'absolute' or 'squared', got {residual!r}")
        if min(latent, hidden) < 1 or search_steps < 0:
            raise ValueError("latent and hidden must be at least 1, search_steps at least 0")
        if not 0 <= feature_weight <= 1:
            raise ValueError(f"feature_weight must lie in [0, 1], got {feature_weight}")
        if search_lr < 0:
            raise ValueError(f"search_lr must be non-negative, got {search_lr}")
        self.latent = latent
        self.hidden = hidden
        self.feature_weight = feature_weight
        self.search_steps = search_steps
        self.search_lr = search_lr
        self.search_seed = search_seed
        self.residual = residual
        super().__init__(window, n_features, score_features)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "latent": self.latent,
            "hidden": self.hidden,
            "feature_weight": self.feature_weight,
            "search_steps": self.search_steps,
            "search_lr": self.search_lr,
            "search_seed": self.search_seed,
            "residual": self.residual,
            "score_features": self.score_features,
        }

    def build_networks(self) -> nn.ModuleDict:
        return mlp_gan_networks(self.latent, self.hidden, (self.window, self.n_features))

    def sample_noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.latent, device=device)

    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        generator = self.networks["generator"]
        features = cast(MLPDiscriminator, self.networks["discriminator"]).features
        with torch.no_grad():
            real_features = features(batch)

        def anomaly_loss(code: torch.Tensor) -> torch.Tensor:
            generated = generator(code)
            error = batch - generated
            error = error.abs() if self.residual == "absolute" else error.square()
            residual = self.scored_columns(error).mean(dim=(1, 2))
            discrimination = (real_features - features(generated)).abs().mean(dim=1)
            return (1 - self.feature_weight) * residual + self.feature_weight * discrimination

        start = torch.randn(self.latent, generator=torch.Generator().manual_seed(self.search_seed))
        codes = start.to(batch.device).expand(len(batch), -1)
        best = search_latent(anomaly_loss, codes, self.search_steps, self.search_lr)
        with torch.no_grad():
            return anomaly_loss(best)
