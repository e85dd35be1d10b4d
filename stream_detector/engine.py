"""The pure scoring path: records → windows → scores → decisions → alert events. No I/O.

The daemon wraps this with Kafka and Redis; evaluation drives it from arrays. Both therefore
judge a stream with exactly the same code.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream_detector.alerts.episodes import EpisodeRules, EpisodeState, step_episode
from stream_detector.buffers import ChannelBuffer, Window
from stream_detector.errors import BadRecord
from stream_detector.records import (
    AlertRecord,
    ModelInfo,
    ParsedTelemetry,
    ScoreRecord,
    SourcePosition,
    alert_id_for,
)
from stream_detector.thresholds.base import ScorePrior, ThresholdState, ThresholdStrategy
from stream_detector.thresholds.calibration import ScoreCalibrator
from stream_detector.thresholds.state_codec import pack_state, unpack_state

# The telemetry value of a step (the rest are command flags): what a threshold that weighs
# errors against the signal's own spread is shown beside each score.
VALUE_COLUMN = 0


class ScoringModel(Protocol):
    """What the engine needs from a trained model (a loaded checkpoint satisfies it)."""

    window: int
    stride: int
    n_features: int
    channels: list[str]

    @property
    def model_info(self) -> ModelInfo: ...

    @property
    def score_prior(self) -> ScorePrior | None: ...

    def score_raw(self, windows: np.ndarray) -> np.ndarray: ...


@dataclass(slots=True)
class ChannelState:
    """Everything the daemon knows about one channel; saved to Redis as one unit."""

    channel: str
    partition: int
    last_offset: int  # Kafka offset of the last record applied; -1 = none
    buffer: ChannelBuffer
    threshold: ThresholdState
    episode: EpisodeState = field(default_factory=EpisodeState)

    def encode(self) -> tuple[bytes, bytes]:
        """(JSON state, raw buffer rows) for the store."""
        snap = self.buffer.snapshot()
        doc = {
            "threshold": pack_state(self.threshold),
            "episode": self.episode.to_dict(),
            "buffer_last_seq": snap["last_seq"],
            "buffer_gaps": snap["gaps"],
        }
        return json.dumps(doc).encode(), snap["rows"]


@dataclass(frozen=True, slots=True)
class StoredState:
    """A channel's state as the store returns it."""

    partition: int
    last_offset: int
    state: bytes
    buffer: bytes


@dataclass(slots=True)
class BatchOutcome:
    alerts: list[AlertRecord] = field(default_factory=list)
    scores: list[ScoreRecord] = field(default_factory=list)
    anomalous_windows: int = 0


class DetectionEngine:
    """Owns the model, the threshold strategy and the episode rules; holds no channel state."""

    def __init__(
        self,
        model: ScoringModel,
        threshold: ThresholdStrategy,
        rules: EpisodeRules,
        *,
        stride: int | None = None,
        channels: list[str] | None = None,
        max_batch_size: int = 256,
        topic: str = "",
        emit_scores: bool = False,
        calibrator: ScoreCalibrator | None = None,
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.rules = rules
        self.window = model.window
        self.n_features = model.n_features
        self.stride = stride or model.stride
        accepted = channels if channels is not None else model.channels
        self.known_channels: frozenset[str] | None = frozenset(accepted) if accepted else None
        self.max_batch_size = max_batch_size
        self.topic = topic
        self.emit_scores = emit_scores
        self.model_info = model.model_info
        self.calibrator = calibrator
        prior = model.score_prior
        self._prior = calibrator.calibrated_prior(prior) if calibrator and prior else prior
        # The detection config is data: its hash rides on every alert, so a reader can tell
        # which threshold and rules fired without guessing from deploy history.
        self.config_version = hashlib.sha256(
            json.dumps(self.describe(), sort_keys=True).encode()
        ).hexdigest()[:12]

    # -- channel state -------------------------------------------------------------------

    def new_state(self, channel: str, partition: int) -> ChannelState:
        return ChannelState(
            channel=channel,
            partition=partition,
            last_offset=-1,
            buffer=ChannelBuffer(channel, self.window, self.n_features, self.stride),
            threshold=self.threshold.initial_state(self._prior),
        )

    def restore_state(self, channel: str, stored: StoredState) -> ChannelState:
        doc = json.loads(stored.state)
        buffer = ChannelBuffer.restore(
            channel,
            self.window,
            self.n_features,
            self.stride,
            {"last_seq": doc["buffer_last_seq"], "rows": stored.buffer, "gaps": doc["buffer_gaps"]},
        )
        return ChannelState(
            channel=channel,
            partition=stored.partition,
            last_offset=stored.last_offset,
            buffer=buffer,
            threshold=unpack_state(doc["threshold"]),
            episode=EpisodeState.from_dict(doc["episode"]),
        )

    def check_channel(self, channel: str) -> None:
        if self.known_channels is not None and channel not in self.known_channels:
            raise BadRecord("unknown_channel", f"channel {channel!r} is not served by this model")

    # -- the path ------------------------------------------------------------------------

    @staticmethod
    def already_applied(state: ChannelState, partition: int, offset: int) -> bool:
        return state.partition == partition and offset <= state.last_offset

    def ingest(
        self, state: ChannelState, record: ParsedTelemetry, partition: int, offset: int
    ) -> list[Window]:
        """Push one record into its channel's buffer; return the windows it completes.

        A record at or before the channel's last applied offset was already fully processed
        (its alerts published before the state was saved), so it is skipped: replays after a
        crash are no-ops for the state.
        """
        if self.already_applied(state, partition, offset):
            return []
        windows = state.buffer.push(
            record.seq, record.ts, record.period_s, record.values, partition, offset
        )
        state.partition = partition
        state.last_offset = offset
        return windows

    def score(self, windows: list[Window]) -> np.ndarray:
        """One model call per `max_batch_size` windows, across channels."""
        if not windows:
            return np.zeros(0, dtype=np.float32)
        out = []
        for start in range(0, len(windows), self.max_batch_size):
            chunk = windows[start : start + self.max_batch_size]
            out.append(self.model.score_raw(np.stack([w.data for w in chunk])))
        return np.concatenate(out).astype(np.float32, copy=False)

    def decide(
        self,
        states: dict[str, ChannelState],
        windows: list[Window],
        scores: np.ndarray,
        now: float | None = None,
    ) -> BatchOutcome:
        """Judge scored windows in stream order and turn episode changes into alert records."""
        outcome = BatchOutcome()
        detected_at = time.time() if now is None else now
        for window, raw_score in zip(windows, scores, strict=True):
            state = states[window.channel]
            score = float(raw_score)
            if not math.isfinite(score):
                # A model that overflows is a model bug, not an anomaly; never page on it.
                score = float(np.finfo(np.float32).max)
            if self.calibrator is not None:
                score = self.calibrator(score)
            value = float(window.data[-1, VALUE_COLUMN])
            state.threshold, decision = self.threshold.step(state.threshold, score, value)
            if decision.anomalous:
                outcome.anomalous_windows += 1
            if self.emit_scores:
                outcome.scores.append(
                    ScoreRecord(
                        channel=window.channel,
                        seq=window.end_seq,
                        ts=window.end_ts,
                        score=score,
                        threshold=decision.threshold,
                        status=decision.status,
                    )
                )
            event = step_episode(
                state.episode,
                self.rules,
                seq=window.end_seq,
                ts=window.end_ts,
                score=score,
                threshold=decision.threshold,
                anomalous=decision.anomalous,
                stride=self.stride,
            )
            if event is None:
                continue
            outcome.alerts.append(
                AlertRecord(
                    alert_id=alert_id_for(window.channel, self.model_info, event.first_seq),
                    revision=event.revision,
                    channel=window.channel,
                    state=event.kind,
                    first_seq=event.first_seq,
                    last_seq=event.last_seq,
                    first_ts=event.first_ts,
                    last_ts=event.last_ts,
                    score=event.score,
                    peak_score=event.peak,
                    threshold=event.threshold if math.isfinite(event.threshold) else None,
                    threshold_kind=self.threshold.kind,
                    model=self.model_info,
                    detected_at=detected_at,
                    source=SourcePosition(
                        topic=self.topic, partition=window.partition, offset=window.offset
                    ),
                    config_version=self.config_version,
                )
            )
        return outcome

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_info.model_dump(),
            "window": self.window,
            "stride": self.stride,
            "n_features": self.n_features,
            "threshold": self.threshold.describe(),
            **({"calibration": self.calibrator.describe()} if self.calibrator else {}),
            "episode_rules": {
                "min_hits": self.rules.min_hits,
                "hit_window": self.rules.hit_window,
                "hold_down": self.rules.hold_down,
                "update_ratio": self.rules.update_ratio,
                "suppress": self.rules.suppress,
                # Written only when set, so existing configurations keep their version.
                **({"lead": self.rules.lead} if self.rules.lead else {}),
            },
        }
