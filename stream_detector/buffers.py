"""Per-channel ring buffers that turn a stream of steps into complete, aligned windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_detector.errors import BadRecord


@dataclass(frozen=True, slots=True)
class Window:
    """W consecutive steps of one channel, ending at ``end_seq``; what the model scores."""

    channel: str
    end_seq: int
    end_ts: float
    partition: int
    offset: int  # Kafka offset of the record that completed the window
    data: np.ndarray  # (W, F) float32, a copy owned by the window


class ChannelBuffer:
    """The last W steps of one channel, emitting a window every `stride` steps.

    Windows are aligned on sequence numbers (a window ends at ``seq`` when
    ``(seq - W + 1) % stride == 0``), not on arrival, so the same windows come out whatever
    the record batching and wherever a restart resumed.

    Rows are written twice into a (2W, F) array so that every window is one contiguous
    slice: no modulo arithmetic when reading.
    """

    def __init__(self, channel: str, window: int, n_features: int, stride: int = 1) -> None:
        if window < 1 or stride < 1 or n_features < 1:
            raise ValueError("window, stride and n_features must be positive")
        self.channel = channel
        self.window = window
        self.n_features = n_features
        self.stride = stride
        self._data = np.zeros((2 * window, n_features), dtype=np.float32)
        self._count = 0  # rows held, capped at `window`
        self._written = 0  # rows written since the last reset (drives the ring position)
        self.last_seq: int | None = None
        self.gaps = 0

    def __len__(self) -> int:
        return self._count

    def reset(self) -> None:
        self._count = 0
        self._written = 0
        self.last_seq = None

    def push(
        self,
        first_seq: int,
        ts: float,
        period_s: float,
        values: np.ndarray,
        partition: int = -1,
        offset: int = -1,
    ) -> list[Window]:
        """Append steps (k, F) starting at ``first_seq``; return the windows they complete."""
        if values.ndim != 2 or values.shape[1] != self.n_features:
            raise BadRecord(
                "wrong_value_count",
                f"expected {self.n_features} values per step, got shape {values.shape}",
            )
        if self.last_seq is not None:
            if first_seq <= self.last_seq:
                raise BadRecord(
                    "sequence_backwards",
                    f"channel {self.channel}: seq {first_seq} after {self.last_seq}",
                )
            if first_seq != self.last_seq + 1:
                # A window across a gap would be a shape the model never saw: start over.
                self.gaps += 1
                self.reset()
        w = self.window
        out: list[Window] = []
        for i, row in enumerate(values):
            pos = self._written % w
            self._data[pos] = row
            self._data[pos + w] = row
            self._written += 1
            self._count = min(self._count + 1, w)
            seq = first_seq + i
            if self._count == w and (seq - w + 1) % self.stride == 0:
                start = (pos + 1) % w
                out.append(
                    Window(
                        channel=self.channel,
                        end_seq=seq,
                        end_ts=ts + i * period_s,
                        partition=partition,
                        offset=offset,
                        data=self._data[start : start + w].copy(),
                    )
                )
        self.last_seq = first_seq + len(values) - 1
        return out

    def contents(self) -> np.ndarray:
        """The rows held, oldest first, (len, F)."""
        w = self.window
        end = self._written % w
        ordered = self._data[end : end + w]
        return ordered[w - self._count :].copy()

    def snapshot(self) -> dict[str, Any]:
        """What it takes to rebuild this buffer after a restart (rows as float32 bytes)."""
        return {
            "last_seq": self.last_seq,
            "rows": self.contents().tobytes(),
            "gaps": self.gaps,
        }

    @classmethod
    def restore(
        cls, channel: str, window: int, n_features: int, stride: int, snap: dict[str, Any]
    ) -> ChannelBuffer:
        buf = cls(channel, window, n_features, stride)
        rows = np.frombuffer(snap["rows"], dtype=np.float32).reshape(-1, n_features)
        if len(rows) > window:
            raise ValueError(f"snapshot of {channel} holds {len(rows)} rows for window {window}")
        for row in rows:
            pos = buf._written % window
            buf._data[pos] = row
            buf._data[pos + window] = row
            buf._written += 1
        buf._count = len(rows)
        buf.last_seq = snap["last_seq"]
        buf.gaps = int(snap.get("gaps", 0))
        return buf
