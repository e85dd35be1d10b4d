"""The one training loop the gradient-trained models share.

Mini-batches of windows, Adam, ReduceLROnPlateau and early stopping on the validation loss
with the best weights restored at the end: the seed's Keras recipe, written once. A model
brings its network and a ``batch_loss``; GANs, whose updates alternate, bring their own loop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import structlog
import torch
from torch import nn
from tqdm.auto import tqdm

from stream_detector.models.base import Detector, FitConfig, FitHistory
from stream_detector.models.keras_adam import KerasAdam

__all__ = ["BatchLoss", "fit_network", "windows_to_tensor"]

log = structlog.get_logger(__name__)

# (network, batch of windows on the device) -> mean loss over the batch, a scalar tensor.
BatchLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]

# Validation batches carry no gradients, so they can be larger than training batches.
_EVAL_BATCH_SIZE = 1024


def windows_to_tensor(windows: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 tensor on ``device`` holding a copy-if-needed of ``windows``."""
    array = np.ascontiguousarray(windows, dtype=np.float32)
    if not array.flags.writeable:
        # Window views are read-only; torch wants memory it may write to.
        array = array.copy()
    return torch.from_numpy(array).to(device)


def _mean_loss(
    network: nn.Module, data: np.ndarray, batch_loss: BatchLoss, device: torch.device
) -> float:
    network.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(data), _EVAL_BATCH_SIZE):
            batch = windows_to_tensor(data[start : start + _EVAL_BATCH_SIZE], device)
            total += float(batch_loss(network, batch)) * len(batch)
    return total / len(data)


def fit_network(
    network: nn.Module,
    train: np.ndarray,
    val: np.ndarray | None,
    config: FitConfig,
    *,
    batch_loss: BatchLoss,
    device: torch.device,
    progress: bool = True,
    description: str = "fit",
) -> FitHistory:
    """Train ``network`` (already on ``device``) on ``train`` windows; return the history.

    Early stopping and the learning-rate schedule watch the validation loss, or the training
    loss when ``val`` is None or empty. Unlike Keras, the best epoch's weights are restored
    whether or not training stopped early, so the model always ends at its best epoch;
    ``config.restore_best = False`` keeps the last epoch's, as Keras did. An epoch counts as
    an improvement when its loss is below the best so far by more than ``config.min_delta``.
    Raises FloatingPointError if the loss stops being finite.
    """
    if len(train) == 0:
        raise ValueError("no training windows")
    val_windows = val if val is not None and len(val) > 0 else None
    has_val = val_windows is not None
    torch.manual_seed(config.seed)  # dropout masks
    shuffler = torch.Generator().manual_seed(config.seed)
    optimizer: torch.optim.Optimizer = (
        KerasAdam(network.parameters(), lr=config.lr)
        if config.optimizer == "keras_adam"
        else torch.optim.Adam(network.parameters(), lr=config.lr)
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=config.lr_factor,
        patience=config.lr_patience,
        min_lr=config.min_lr,
    )
    history = FitHistory()
    best_loss = math.inf
    # Kept only when it will be restored: a copy of every weight per better epoch.
    best_state = copy.deepcopy(network.state_dict()) if config.restore_best else None
    epochs_without_improvement = 0
    started = time.perf_counter()

    bar = tqdm(range(config.epochs), desc=description, unit="epoch", disable=not progress)
    for epoch in bar:
        lr = optimizer.param_groups[0]["lr"]
        network.train()
        order = torch.randperm(len(train), generator=shuffler).numpy()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            # Sorted indices gather faster from a strided window view; the batch is
            # still a random subset, and its order inside the batch does not matter.
            index = np.sort(order[start : start + config.batch_size])
            batch = windows_to_tensor(train[index], device)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(network, batch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        train_loss = total / len(train)
        val_loss = (
            _mean_loss(network, val_windows, batch_loss, device)
            if val_windows is not None
            else math.nan
        )
        monitored = val_loss if has_val else train_loss
        if not math.isfinite(monitored) or not math.isfinite(train_loss):
            raise FloatingPointError(
                f"{description}: loss became non-finite at epoch {epoch} "
                f"(train {train_loss}, val {val_loss})"
            )

        history.train_loss.append(train_loss)
        if has_val:
            history.val_loss.append(val_loss)
        history.learning_rates.append(lr)
        log.debug(
            "epoch_finished",
            model=description,
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss if has_val else None,
            lr=lr,
        )
        bar.set_postfix(
            train=f"{train_loss:.4g}", val=f"{val_loss:.4g}" if has_val else "-", lr=f"{lr:.1e}"
        )

        if monitored < best_loss - config.min_delta:
            best_loss = monitored
            history.best_epoch = epoch
            if config.restore_best:
                best_state = copy.deepcopy(network.state_dict())
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
            if epochs_without_improvement >= config.patience:
                history.stopped_early = True
                break
        if config.lr_schedule:
            scheduler.step(monitored)
    bar.close()

    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    history.seconds = time.perf_counter() - started
    return history


def fit_detector(
    detector: Detector,
    network: nn.Module,
    train: np.ndarray,
    val: np.ndarray | None,
    config: FitConfig,
    batch_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    progress: bool = True,
) -> FitHistory:
    """`Detector.fit` for a detector that trains one network on one batch loss."""
    detector.check_windows(train)
    if val is not None and len(val) > 0:
        detector.check_windows(val)
    detector.to(config.device)
    return fit_network(
        network,
        train,
        val,
        config,
        batch_loss=batch_loss,
        device=detector.device,
        progress=progress,
        description=detector.kind,
    )
