"""Wire formats: the versioned JSON records that cross Kafka topics.

Every record carries ``v`` (the schema version) so consumers can refuse what they do not
understand instead of guessing. See ``docs/wire-format.md`` for the prose version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream_detector.errors import BadRecord

TELEMETRY_SCHEMA_VERSION: Final = 1
ALERT_SCHEMA_VERSION: Final = 1
DEAD_LETTER_SCHEMA_VERSION: Final = 1
SCORE_SCHEMA_VERSION: Final = 1

CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class TelemetryRecord(_Record):
    """One or several consecutive time steps of one channel.

    Kafka key: the channel id, so that one channel stays on one partition, in order.
    ``seq`` is the sequence number of the first step in ``values``; step ``i`` has sequence
    number ``seq + i`` and timestamp ``ts + i * period_s``.
    """

    v: Literal[1] = TELEMETRY_SCHEMA_VERSION
    channel: str = Field(pattern=CHANNEL_PATTERN)
    ts: float = Field(description="epoch seconds of the first step")
    seq: int = Field(ge=0)
    period_s: float = Field(default=0.0, ge=0.0, description="seconds between steps")
    values: list[list[float]] = Field(min_length=1, description="steps × features")

    def steps(self) -> np.ndarray:
        """The values as a float32 array of shape (steps, features)."""
        # Overflow to inf is expected for huge inputs and reported as non_finite by the caller.
        with np.errstate(over="ignore"):
            return np.asarray(self.values, dtype=np.float32)


class ParsedTelemetry(BaseModel):
    """A telemetry record that passed validation, with its values as an array."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    channel: str
    ts: float
    seq: int
    period_s: float
    values: np.ndarray  # (steps, features) float32, finite

    @property
    def last_seq(self) -> int:
        return self.seq + int(self.values.shape[0]) - 1

    @property
    def last_ts(self) -> float:
        return self.ts + (self.values.shape[0] - 1) * self.period_s


def parse_telemetry(raw: bytes | None, n_features: int | None = None) -> ParsedTelemetry:
    """Validate one raw Kafka value; raise `BadRecord` with a stable reason if it cannot be scored.

    Reasons: ``not_json``, ``invalid_schema``, ``ragged_values``, ``wrong_value_count``,
    ``non_finite``. Channel- and order-dependent checks (``unknown_channel``,
    ``sequence_backwards``) need daemon state and happen in the buffers.
    """
    if raw is None:
        raise BadRecord("not_json", "empty value (tombstone)")
    try:
        decoded: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRecord("not_json", str(exc)[:200]) from None
    if not isinstance(decoded, dict):
        raise BadRecord("invalid_schema", f"expected a JSON object, got {type(decoded).__name__}")
    try:
        record = TelemetryRecord.model_validate(decoded)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRecord("invalid_schema", f"{where}: {first['msg']}") from None
    widths = {len(row) for row in record.values}
    if len(widths) != 1:
        raise BadRecord("ragged_values", f"steps have different widths {sorted(widths)}")
    width = widths.pop()
    if n_features is not None and width != n_features:
        raise BadRecord("wrong_value_count", f"expected {n_features} values per step, got {width}")
    values = record.steps()
    # float32 overflow turns a huge finite JSON number into inf, which is just as unscorable.
    if not np.isfinite(values).all() or not math.isfinite(record.ts):
        raise BadRecord("non_finite", "NaN or infinity in values or ts")
    return ParsedTelemetry(
        channel=record.channel,
        ts=record.ts,
        seq=record.seq,
        period_s=record.period_s,
        values=values,
    )


def telemetry_bytes(
    channel: str, seq: int, ts: float, values: np.ndarray, period_s: float = 0.0
) -> bytes:
    """Encode steps (steps × features) as a telemetry record, fast (no pydantic round trip)."""
    payload = {
        "v": TELEMETRY_SCHEMA_VERSION,
        "channel": channel,
        "ts": ts,
        "seq": int(seq),
        "period_s": period_s,
        "values": np.asarray(values, dtype=np.float64).tolist(),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


AlertState = Literal["open", "update", "resolve"]


class ModelInfo(_Record):
    name: str
    version: str


class SourcePosition(_Record):
    """Where in the input the record that caused an alert event sits."""

    topic: str
    partition: int
    offset: int


class AlertRecord(_Record):
    """One event in the life of an anomaly episode on one channel.

    Kafka key: the channel id (events of one channel stay in order). ``alert_id`` is the
    same for every event of one episode and is a pure function of (channel, model, first
    sequence number), so a replayed episode yields the same id and duplicates are harmless.
    ``revision`` counts the events of an episode (0 = open), so (alert_id, revision) names
    one event exactly.
    """

    v: Literal[1] = ALERT_SCHEMA_VERSION
    alert_id: str
    revision: int = Field(ge=0)
    channel: str
    state: AlertState
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float
    score: float
    peak_score: float
    threshold: float | None
    threshold_kind: str
    model: ModelInfo
    detected_at: float
    source: SourcePosition | None = None
    config_version: str | None = Field(
        default=None,
        description="hash of the model, threshold and episode rules that produced the event",
    )


def alert_id_for(channel: str, model: ModelInfo, first_seq: int) -> str:
    """Deterministic id of the episode that starts at ``first_seq`` on ``channel``."""
    material = f"{channel}\x1f{model.name}\x1f{model.version}\x1f{first_seq}"
    return hashlib.sha256(material.encode()).hexdigest()[:24]


class ScoreRecord(_Record):
    """One scored window, published only when a scores topic is configured (dashboards, bench)."""

    v: Literal[1] = SCORE_SCHEMA_VERSION
    channel: str
    seq: int = Field(description="sequence number of the last step of the window")
    ts: float
    score: float
    threshold: float | None
    status: Literal["normal", "anomalous", "not_ready", "pending"]


class DeadLetterRecord(_Record):
    """A record the daemon could not score, with why, and the original bytes intact."""

    v: Literal[1] = DEAD_LETTER_SCHEMA_VERSION
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value_b64: str = Field(description="the original value, base64, byte for byte")
    failed_at: float

    @classmethod
    def from_failure(
        cls,
        error: BadRecord,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> DeadLetterRecord:
        return cls(
            reason=error.reason,
            detail=error.detail[:500],
            topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            value_b64=base64.b64encode(value or b"").decode(),
            failed_at=time.time(),
        )

    def original_value(self) -> bytes:
        return base64.b64decode(self.value_b64)
