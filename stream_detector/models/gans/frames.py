"""Synthetic RGB+depth frames: the latent-search GAN shown on images, as its seed used it.

Normal frames hold one box, anomalous frames one ball, each at a random position, size and
colour on a black, far background. Channels 0-2 are colour, channel 3 is nearness (1 near,
0 far): a box's front face is flat, so its nearness is constant over the face; a ball
bulges towards the camera, so its nearness falls from the centre to the rim. Sizes are
chosen so that boxes and balls cover similar areas: the shape, not the amount of colour,
tells them apart. ``evaluate_latent_search_on_frames`` trains a GAN on boxes and reports
how well the latent-search score separates held-out boxes from balls (ROC AUC).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from stream_detector.models.gans.latent_search_gan import (
    ConvFrameDiscriminator,
    ConvFrameGenerator,
    latent_search_scores,
)
from stream_detector.models.gans.training import adam, standard_gan_step

__all__ = [
    "FRAME_CHANNELS",
    "FramesEvaluation",
    "evaluate_latent_search_on_frames",
    "rank_roc_auc",
    "render_frames",
    "train_frame_gan",
]

FRAME_CHANNELS = 4  # red, green, blue, nearness
Shape = Literal["box", "ball"]


def render_frames(count: int, shape: Shape, size: int = 32, seed: int = 0) -> np.ndarray:
    """``count`` frames (count, 4, size, size) float32 in [0, 1], one ``shape`` in each."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((count, FRAME_CHANNELS, size, size), dtype=np.float32)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    for frame in frames:
        colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        nearness = rng.uniform(0.5, 1.0)
        if shape == "box":
            # Side lengths 13-24 px at size 32: areas 169-576 px², like the balls below.
            # Large shapes overlap wherever the search starts, so its gradient can move them.
            height, width = rng.uniform(0.4, 0.75, 2) * size
            top = rng.uniform(0, size - height)
            left = rng.uniform(0, size - width)
            mask = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
            # The flat face sits at 0.85 of the nearness a ball's centre gets (below):
            # both shapes then carry the same depth energy on average, so the depth
            # channel's profile tells them apart, not its brightness.
            depth = np.full_like(rows, 0.85 * nearness)
        else:
            # Radii 7.3-13.5 px at size 32: areas 169-573 px².
            radius = rng.uniform(0.226, 0.423) * size
            centre = rng.uniform(radius, size - radius, 2)
            distance = np.hypot(rows - centre[0], cols - centre[1]) / radius
            mask = distance < 1
            # A sphere's surface: nearest at the centre, falling off to the rim as
            # sqrt(1 - d²), to 40 % of the centre's nearness.
            depth = nearness * (0.4 + 0.6 * np.sqrt(np.clip(1 - distance**2, 0, 1)))
        frame[:3][:, mask] = colour[:, None]
        frame[3][mask] = depth[mask]
    return frames


def rank_roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank formula; ties get their average rank (count ½).

    ``labels`` are 1 for positives (anomalies) and 0 for negatives; needs both present.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based rank of each distinct value, averaged over the ties it stands for.
    last_rank = np.cumsum(counts)
    average_rank = last_rank - (counts - 1) / 2
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def train_frame_gan(
    frames: np.ndarray,
    *,
    latent: int = 16,
    width: int = 32,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
    progress: bool = True,
) -> ConvFrameGenerator:
    """A DCGAN-style generator trained on ``frames`` (N, C, H, W) with the original GAN loss."""
    torch.manual_seed(seed)
    channels, size = frames.shape[1], frames.shape[2]
    generator = ConvFrameGenerator(latent, channels, size, width)
    discriminator = ConvFrameDiscriminator(channels, size, width)
    generator_optimizer, discriminator_optimizer = adam(generator, lr), adam(discriminator, lr)
    data = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    shuffler = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="frame gan", unit="epoch", disable=not progress):
        order = torch.randperm(len(data), generator=shuffler)
        for start in range(0, len(data), batch_size):
            batch = data[order[start : start + batch_size]]
            standard_gan_step(
                generator,
                discriminator,
                batch,
                torch.randn(len(batch), latent),
                generator_optimizer,
                discriminator_optimizer,
            )
    return generator.eval()


@dataclass(frozen=True)
class FramesEvaluation:
    """Latent-search scores of held-out boxes (normal) and balls (anomalous)."""

    roc_auc: float
    box_scores: np.ndarray
    ball_scores: np.ndarray
    train_seconds: float
    score_seconds: float


def evaluate_latent_search_on_frames(
    *,
    train_count: int = 512,
    test_count: int = 100,
    size: int = 32,
    latent: int = 16,
    width: int = 32,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-4,
    n_seeds: int = 3,
    steps: int = 19,
    latent_lr: float = 5e-2,
    weight_lr: float = 6e-9,
    seed: int = 0,
    progress: bool = True,
) -> FramesEvaluation:
    """Train on rendered boxes, score ``test_count`` new boxes and balls, report ROC AUC.

    The search settings default to the seed's (n_seed 3, k 19, γ_z 5e-2, γ_θ 6e-9).
    """
    started = time.perf_counter()
    generator = train_frame_gan(
        render_frames(train_count, "box", size, seed=seed),
        latent=latent,
        width=width,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
    )
    trained = time.perf_counter()
    # Different seeds from the training frames: held-out samples.
    boxes = torch.from_numpy(render_frames(test_count, "box", size, seed=seed + 1))
    balls = torch.from_numpy(render_frames(test_count, "ball", size, seed=seed + 2))
    scores = [
        latent_search_scores(
            generator,
            frames,
            latent,
            n_seeds=n_seeds,
            steps=steps,
            latent_lr=latent_lr,
            weight_lr=weight_lr,
        ).numpy()
        for frames in (boxes, balls)
    ]
    labels = np.concatenate([np.zeros(test_count), np.ones(test_count)])
    auc = rank_roc_auc(labels, np.concatenate(scores))
    if math.isnan(auc):
        raise FloatingPointError("ROC AUC is NaN: the scores are not finite")
    return FramesEvaluation(
        roc_auc=auc,
        box_scores=scores[0],
        ball_scores=scores[1],
        train_seconds=trained - started,
        score_seconds=time.perf_counter() - trained,
    )
