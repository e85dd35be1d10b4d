"""Adaptive thresholds: pure strategies plus the stores that keep their state."""

from stream_detector.thresholds import ewma as _ewma  # noqa: F401  (registers "ewma_sigma")
from stream_detector.thresholds.base import (
    Decision,
    ThresholdStrategy,
    available_thresholds,
    build_threshold,
    register_threshold,
)

__all__ = [
    "Decision",
    "ThresholdStrategy",
    "available_thresholds",
    "build_threshold",
    "register_threshold",
]
