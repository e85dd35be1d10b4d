"""From training series to a checkpoint the daemon can load: scaler, trainer, checkpoint file."""

from stream_detector.training.checkpoint import (
    Calibration,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from stream_detector.training.scaler import StandardScaler
from stream_detector.training.trainer import split_windows, train_on_dataset, train_on_series

__all__ = [
    "Calibration",
    "Checkpoint",
    "StandardScaler",
    "load_checkpoint",
    "save_checkpoint",
    "split_windows",
    "train_on_dataset",
    "train_on_series",
]
