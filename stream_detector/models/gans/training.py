"""The adversarial training loop the GAN detectors share, and the update steps they reuse.

GAN losses do not fall steadily the way a reconstruction loss does, so the shared loop in
``torch_training`` (which schedules the learning rate and stops on its own loss) does not
fit. Here each epoch runs the model's own ``train_step`` over shuffled mini-batches, then
judges the epoch by the model's *anomaly score* on the validation windows: the mean score
of normal windows is the one number that says whether the detector got better. It is
recorded as ``val_loss``; early stopping and best-epoch restoring watch it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from stream_detector.models.base import FitConfig, FitHistory
from stream_detector.models.torch_training import windows_to_tensor

if TYPE_CHECKING:
    from stream_detector.models.gans.detector import GANDetector

__all__ = ["adam", "fit_adversarial", "gradient_penalty", "standard_gan_step"]

log = structlog.get_logger(__name__)

# Adam's betas for GANs (Radford et al.): a short first-moment memory keeps the
# alternating updates from chasing a stale gradient.
GAN_BETAS = (0.5, 0.999)


def adam(module: nn.Module, lr: float) -> torch.optim.Adam:
    """The optimiser every GAN network here trains with."""
    return torch.optim.Adam(module.parameters(), lr=lr, betas=GAN_BETAS)


def standard_gan_step(
    generator: nn.Module,
    discriminator: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    noise: torch.Tensor,
    generator_optimizer: torch.optim.Optimizer,
    discriminator_optimizer: torch.optim.Optimizer,
) -> float:
    """One discriminator and one generator update of the original (non-saturating) GAN.

    ``discriminator`` returns one logit per sample. Returns the discriminator's loss (binary
    cross-entropy, real against generated): the generator's own loss rises as the
    discriminator learns, from the first epoch on, so it cannot show that training works.
    """
    fake = generator(noise)
    real_logits = discriminator(real)
    fake_logits = discriminator(fake.detach())
    discriminator_loss = F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    discriminator_optimizer.zero_grad(set_to_none=True)
    discriminator_loss.backward()
    discriminator_optimizer.step()

    # Non-saturating loss: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    fooled = discriminator(fake)
    generator_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
    generator_optimizer.zero_grad(set_to_none=True)
    generator_loss.backward()
    generator_optimizer.step()
    return float(discriminator_loss.detach())


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP's penalty: (‖∇C(x̂)‖₂ − 1)² at random points between real and fake samples."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    mix = torch.rand(shape, device=real.device)
    between = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)
    scores = critic(between)
    (gradients,) = torch.autograd.grad(scores.sum(), between, create_graph=True)
    norms = gradients.flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()


def fit_adversarial(
    detector: GANDetector,
    train: np.ndarray,
    val: np.ndarray | None,
    config: FitConfig,
    progress: bool = True,
) -> FitHistory:
    """Train ``detector``'s networks (already on its device) on ``train`` windows.

    ``train_loss`` is what the detector's ``train_step`` returns (its ``train_loss_name``
    says which loss). ``val_loss`` is the mean anomaly score of the validation windows after
    each epoch; with ``patience`` epochs without a lower one training stops, and the epoch
    with the lowest is restored (all networks and stored statistics). Without validation
    windows there is no such signal (a GAN's own losses do not say when it is best): every
    epoch runs and the last one is kept. The learning rate stays at ``config.lr``.
    """
    if len(train) == 0:
        raise ValueError("no training windows")
    val_windows = val if val is not None and len(val) > 0 else None
    torch.manual_seed(config.seed)  # noise draws and gradient-penalty mixes
    shuffler = torch.Generator().manual_seed(config.seed)
    detector.configure_optimizers(config.lr)
    networks = detector.networks
    history = FitHistory()
    best_loss = math.inf
    best_state = copy.deepcopy(networks.state_dict())
    epochs_without_improvement = 0
    started = time.perf_counter()

    bar = tqdm(range(config.epochs), desc=detector.kind, unit="epoch", disable=not progress)
    for epoch in bar:
        networks.train()
        order = torch.randperm(len(train), generator=shuffler).numpy()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = np.sort(order[start : start + config.batch_size])
            batch = windows_to_tensor(train[index], detector.device)
            total += detector.train_step(batch) * len(index)
        train_loss = total / len(train)
        networks.eval()
        detector.end_epoch(train)
        val_loss = (
            float(detector.score_in_batches(val_windows).mean())
            if val_windows is not None
            else math.nan
        )
        if not math.isfinite(train_loss) or (
            val_windows is not None and not math.isfinite(val_loss)
        ):
            raise FloatingPointError(
                f"{detector.kind}: loss became non-finite at epoch {epoch} "
                f"(train {train_loss}, val {val_loss})"
            )
        history.train_loss.append(train_loss)
        history.learning_rates.append(config.lr)
        log.debug(
            "epoch_finished",
            model=detector.kind,
            epoch=epoch,
            train_loss=train_loss,
            val_score=val_loss if val_windows is not None else None,
        )
        bar.set_postfix(
            {detector.train_loss_name: f"{train_loss:.4g}"}
            | ({"val_score": f"{val_loss:.4g}"} if val_windows is not None else {})
        )
        if val_windows is None:
            history.best_epoch = epoch
            continue
        history.val_loss.append(val_loss)
        if val_loss < best_loss:
            best_loss = val_loss
            history.best_epoch = epoch
            best_state = copy.deepcopy(networks.state_dict())
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
            if epochs_without_improvement >= config.patience:
                history.stopped_early = True
                break
    bar.close()

    if val_windows is not None:
        networks.load_state_dict(best_state)
    networks.eval()
    history.seconds = time.perf_counter() - started
    return history
