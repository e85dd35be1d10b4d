"""Telemetry producers: replay SMAP/MSL or generated channels onto the Kafka telemetry topic."""

from producers.replay import (
    ChannelSeries,
    ReplayReport,
    StepPacer,
    interleave,
    replay,
    stream_series,
)
from producers.sender import StepSender, TelemetrySender, TelemetrySendError
from producers.synthetic import (
    ANOMALY_KINDS,
    AnomalyKind,
    SyntheticChannel,
    anomaly_truth,
    make_synthetic_channels,
    send_synthetic,
)

__all__ = [
    "ANOMALY_KINDS",
    "AnomalyKind",
    "ChannelSeries",
    "ReplayReport",
    "StepPacer",
    "StepSender",
    "SyntheticChannel",
    "TelemetrySendError",
    "TelemetrySender",
    "anomaly_truth",
    "interleave",
    "make_synthetic_channels",
    "replay",
    "send_synthetic",
    "stream_series",
]
