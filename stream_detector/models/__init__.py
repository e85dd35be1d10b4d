"""Anomaly-scoring models behind one interface, found by name in a registry.

Importing this package registers the built-in models; a new model is one module that
decorates its class with ``@register`` and is imported here.
"""

from typing import Any, Final

from stream_detector.models import dense_ae as _dense_ae  # noqa: F401 - registers "dense_ae"
from stream_detector.models import ensemble as _ensemble  # noqa: F401 - registers "ensemble"
from stream_detector.models import gans as _gans  # noqa: F401 - registers the GANs
from stream_detector.models import knn_dt as _knn_dt  # noqa: F401 - registers "knn_dt"
from stream_detector.models import lstm_ae as _lstm_ae  # noqa: F401 - registers "lstm_ae"
from stream_detector.models import (  # noqa: F401 - registers "lstm_ae_chapter"
    lstm_ae_chapter as _lstm_ae_chapter,
)
from stream_detector.models import (  # noqa: F401 - registers "lstm_ae_small"
    lstm_ae_small as _lstm_ae_small,
)
from stream_detector.models import lstm_dt as _lstm_dt  # noqa: F401 - registers "lstm_dt"
from stream_detector.models import vae as _vae  # noqa: F401 - registers "vae"
from stream_detector.models.base import (
    Detector,
    FitConfig,
    FitHistory,
    available_detectors,
    build_detector,
    get_detector_class,
    register,
    resolve_device,
    seed_everything,
)
from stream_detector.models.lstm_ae import LSTMAutoencoder
from stream_detector.models.reconstruction import ReconstructionDetector

# What `train` and `evaluate` build when no --model is given: the detector of the default
# configuration, picked with its threshold by the threshold race's label-free rule
# (docs/threshold-race.md, eighth look). `--model lstm_dt` alone is telemanom's predictor with
# n_predictions 1.
DEFAULT_DETECTOR: Final[dict[str, Any]] = {
    "kind": "lstm_dt",
    "hyperparameters": {"n_predictions": 10},
}

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "FitConfig",
    "FitHistory",
    "LSTMAutoencoder",
    "ReconstructionDetector",
    "available_detectors",
    "build_detector",
    "get_detector_class",
    "register",
    "resolve_device",
    "seed_everything",
]
