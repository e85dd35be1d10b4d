"""Per-feature standardisation with statistics of the training data only."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

__all__ = ["StandardScaler"]

# Constant columns (one-hot command flags that never fire in training) get std 1 instead
# of ~0, so a flag that fires at scoring time reads as 1, not as a huge outlier.
MIN_STD = 1e-6


class StandardScaler:
    """``(x - mean) / std`` per feature, the last axis of any array it is given."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(
                f"mean and std must be 1-D of equal length, got {mean.shape}, {std.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("mean must be finite and std finite and positive")
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, data: np.ndarray) -> Self:
        """Statistics over every axis but the last of ``data`` (e.g. (T, D) or (N, window, D))."""
        if data.ndim < 1 or data.size == 0:
            raise ValueError(f"cannot fit a scaler on an empty array of shape {data.shape}")
        flat = data.reshape(-1, data.shape[-1])
        mean = flat.mean(axis=0, dtype=np.float64)
        std = flat.std(axis=0, dtype=np.float64)
        std = np.where(std < MIN_STD, 1.0, std)
        return cls(mean, std)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Standardised float32 copy of ``data``, whose last axis holds the features."""
        if data.shape[-1:] != (self.n_features,):
            raise ValueError(f"scaler has {self.n_features} features, data has shape {data.shape}")
        return ((data - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, data: np.ndarray) -> np.ndarray:
        """Back to the original units, float32."""
        return (data * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(np.asarray(data["mean"]), np.asarray(data["std"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StandardScaler):
            return NotImplemented
        return np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside
