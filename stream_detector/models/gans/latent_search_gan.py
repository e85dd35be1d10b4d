"""Latent-search GAN with generator fine-tuning (Deecke et al., ADGAN; the latent-search seed).

A GAN learns normal samples. To score a sample x, ``n_seeds`` searches start from latent
codes z ~ N(0, I); each runs ``steps`` Adam updates on z (learning rate γ_z) *and* on a
private copy of the generator's weights θ (learning rate γ_θ), both lowering the MSE
between G_θ(z) and x. θ goes back to the trained weights for the next sample. The score
is the final MSE averaged over the searches: a normal sample is reachable, an anomaly not.

The search is shape-agnostic: it only needs a generator from codes to samples. Windows
(T, F) use an MLP generator; (C, H, W) frames use ``ConvFrameGenerator`` (see ``frames``).
Every sample gets the same ``n_seeds`` starting codes (drawn from ``search_seed``) and its
own weight copies, so its score does not depend on what else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from stream_detector.models.base import register
from stream_detector.models.gans.detector import PlainGAN

__all__ = [
    "ConvFrameDiscriminator",
    "ConvFrameGenerator",
    "LatentSearchGAN",
    "MLPDiscriminator",
    "MLPGenerator",
    "latent_search_scores",
]

# Windows searched at once; bounds the memory of the per-sample weight copies.
_SEARCH_CHUNK = 64
# Adam's constants for the search, as torch.optim.Adam's defaults.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class MLPGenerator(nn.Module):
    """(B, latent) -> (B, *sample_shape) through two hidden LeakyReLU layers."""

    def __init__(self, latent: int, hidden: int, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.sample_shape = sample_shape
        self.layers = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, math.prod(sample_shape)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z).view(-1, *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """(B, *sample_shape) -> one logit per sample; ``features`` is the last hidden layer."""

    def __init__(self, hidden: int, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(sample_shape), hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
        )
        self.to_logit = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logit(self.features(x)).squeeze(1)


def mlp_gan_networks(latent: int, hidden: int, shape: tuple[int, ...]) -> nn.ModuleDict:
    """An MLP generator (z -> shape) and discriminator, as the plain window GANs use them."""
    return nn.ModuleDict(
        {
            "generator": MLPGenerator(latent, hidden, shape),
            "discriminator": MLPDiscriminator(hidden, shape),
        }
    )


class ConvFrameGenerator(nn.Module):
    """(B, latent) -> (B, channels, size, size), DCGAN-style; size a multiple of 8."""

    def __init__(self, latent: int, channels: int, size: int, width: int = 32) -> None:
        super().__init__()
        if size % 8:
            raise ValueError(f"frame size must be a multiple of 8, got {size}")
        self.width = width
        self.start = size // 8
        self.project = nn.Linear(latent, 2 * width * self.start * self.start)
        # No batch normalisation: tried, it collapsed to one mode in short CPU training.
        self.layers = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            # A linear output: behind a sigmoid the generator collapsed to black frames
            # (mostly background) with vanishing gradients to leave them.
            nn.ConvTranspose2d(width // 2, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        start = self.project(z).view(-1, 2 * self.width, self.start, self.start)
        return self.layers(start)


class ConvFrameDiscriminator(nn.Module):
    """(B, channels, size, size) -> one logit per frame."""

    def __init__(self, channels: int, size: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width // 2, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.to_logit = nn.Linear(2 * width * (size // 8) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logit(self.features(x)).squeeze(1)


def _adam_update(
    value: torch.Tensor,
    gradient: torch.Tensor,
    moments: tuple[torch.Tensor, torch.Tensor],
    step: int,
    lr: float,
) -> torch.Tensor:
    """One Adam step, element by element (the same rule as torch.optim.Adam), in place."""
    first, second = moments
    first.mul_(_BETA1).add_(gradient, alpha=1 - _BETA1)
    second.mul_(_BETA2).addcmul_(gradient, gradient, value=1 - _BETA2)
    corrected_first = first / (1 - _BETA1**step)
    corrected_second = second / (1 - _BETA2**step)
    return value.sub_(lr * corrected_first / (corrected_second.sqrt() + _EPS))


def latent_search_scores(
    generator: nn.Module,
    samples: torch.Tensor,
    latent: int,
    *,
    n_seeds: int = 3,
    steps: int = 19,
    latent_lr: float = 5e-2,
    weight_lr: float = 6e-9,
    search_seed: int = 0,
    scored_error: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B,) ADGAN scores of ``samples`` (B, *shape) under ``generator`` (codes (B, latent)).

    The search lowers the MSE over whole samples; ``scored_error`` (squared errors
    (B, *shape) -> (B,)) says what the final score reads, the mean of all by default.

    Each sample gets its own copy of the weights for each search (vectorised with
    ``torch.func.vmap``); ``generator`` itself is never changed.
    """
    generator.eval()
    weights = {name: p.detach() for name, p in generator.named_parameters()}
    buffers = {name: b.detach() for name, b in generator.named_buffers()}
    count = len(samples)
    tune_weights = weight_lr > 0

    def generate_one(theta: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return functional_call(generator, (theta, buffers), (z.unsqueeze(0),)).squeeze(0)

    # Sample i's output from its own weights θ_i; autograd through the summed loss then
    # gives every θ_i and z_i only sample i's gradient.
    generate_each = vmap(generate_one)

    def squared_errors(theta: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        generated = generate_each(theta, z) if tune_weights else generator(z)
        return (generated - samples) ** 2

    def losses(theta: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return squared_errors(theta, z).flatten(1).mean(dim=1)

    def final_scores(theta: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        errors = squared_errors(theta, z)
        return scored_error(errors) if scored_error is not None else errors.flatten(1).mean(1)

    starts = torch.Generator().manual_seed(search_seed)
    total = torch.zeros(count, device=samples.device)
    with torch.enable_grad():
        for _ in range(n_seeds):
            start = torch.randn(latent, generator=starts).to(samples.device)
            z = start.expand(count, -1).clone().requires_grad_(True)
            theta = (
                {
                    name: w.expand(count, *w.shape).clone().requires_grad_(True)
                    for name, w in weights.items()
                }
                if tune_weights
                else {}
            )
            moments = {
                key: (torch.zeros_like(value), torch.zeros_like(value))
                for key, value in [("z", z), *theta.items()]
            }
            for step in range(1, steps + 1):
                variables = {"z": z, **theta}
                found = torch.autograd.grad(losses(theta, z).sum(), list(variables.values()))
                with torch.no_grad():
                    for (key, value), gradient in zip(variables.items(), found, strict=True):
                        lr = latent_lr if key == "z" else weight_lr
                        _adam_update(value, gradient, moments[key], step, lr)
            with torch.no_grad():
                total += final_scores(theta, z)
    return total / n_seeds


@register
class LatentSearchGAN(PlainGAN):
    """A GAN whose score is how well a latent (and weight) search reproduces the window."""

    kind = "latent_search_gan"
    min_score_batch = 16

    def __init__(
        self,
        window: int,
        n_features: int,
        *,
        latent: int = 16,
        hidden: int = 128,
        n_seeds: int = 3,
        steps: int = 19,
        latent_lr: float = 5e-2,
        weight_lr: float = 6e-9,
        search_seed: int = 0,
        score_features: list[int] | None = None,
    ) -> None:
        if min(latent, hidden, n_seeds) < 1 or steps < 0:
            raise ValueError("latent, hidden and n_seeds must be at least 1, steps at least 0")
        if latent_lr < 0 or weight_lr < 0:
            raise ValueError("latent_lr and weight_lr must be non-negative")
        self.latent = latent
        self.hidden = hidden
        self.n_seeds = n_seeds
        self.steps = steps
        self.latent_lr = latent_lr
        self.weight_lr = weight_lr
        self.search_seed = search_seed
        super().__init__(window, n_features, score_features)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "latent": self.latent,
            "hidden": self.hidden,
            "n_seeds": self.n_seeds,
            "steps": self.steps,
            "latent_lr": self.latent_lr,
            "weight_lr": self.weight_lr,
            "search_seed": self.search_seed,
            "score_features": self.score_features,
        }

    def build_networks(self) -> nn.ModuleDict:
        return mlp_gan_networks(self.latent, self.hidden, (self.window, self.n_features))

    def sample_noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.latent, device=device)

    def score_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        # Per-sample weight copies cost memory ∝ samples × generator size: search in
        # chunks, each padded like a small batch so that every window meets the same
        # kernels (see min_score_batch).
        parts = []
        for start in range(0, len(batch), _SEARCH_CHUNK):
            chunk = batch[start : start + _SEARCH_CHUNK]
            count = len(chunk)
            if count < self.min_score_batch:
                padding = chunk.new_zeros((self.min_score_batch - count, *chunk.shape[1:]))
                chunk = torch.cat([chunk, padding])
            parts.append(self._search(chunk)[:count])
        return torch.cat(parts)

    def _search(self, batch: torch.Tensor) -> torch.Tensor:
        return latent_search_scores(
            self.networks["generator"],
            batch,
            self.latent,
            n_seeds=self.n_seeds,
            steps=self.steps,
            latent_lr=self.latent_lr,
            weight_lr=self.weight_lr,
            search_seed=self.search_seed,
            scored_error=lambda errors: self.scored_columns(errors).mean(dim=(1, 2)),
        )
