"""Data sets and windowing: where training and evaluation series come from."""

from stream_detector.data.smap_msl import (
    LabelRow,
    channel_ids,
    load_labels,
    load_series,
)
from stream_detector.data.windows import sliding_windows

__all__ = ["LabelRow", "channel_ids", "load_labels", "load_series", "sliding_windows"]
