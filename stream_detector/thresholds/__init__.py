"""Adaptive thresholds: pure strategies plus the stores that keep their state."""

from stream_detector.thresholds import ewma as _ewma  # noqa: F401  (registers "ewma_sigma")
from stream_detector.thresholds import p2 as _p2  # noqa: F401  (registers "p2_quantile")
from stream_detector.thresholds import recent_max as _recent_max  # noqa: F401  (recent_max)
from stream_detector.thresholds import spot as _spot  # noqa: F401  (registers "spot")
from stream_detector.thresholds import static as _static  # noqa: F401  (train_quantile, ...)
from stream_detector.thresholds import telemanom as _telemanom  # noqa: F401  (telemanom)
from stream_detector.thresholds import telemanom_batches as _batches  # noqa: F401  (its batches)
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
