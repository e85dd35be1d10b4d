"""The one Kafka send path every producer uses: telemetry steps in, keyed records out."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Protocol

import numpy as np
from kafka import KafkaProducer

from stream_detector.errors import StreamDetectorError
from stream_detector.records import telemetry_bytes

# Large enough that a replay running flat out fills batches instead of sending one request
# per record; linger stays small so a paced (live-like) stream is not held back noticeably.
DEFAULT_BATCH_SIZE = 256 * 1024
DEFAULT_LINGER_MS = 5
CLOSE_TIMEOUT_ON_ERROR_S = 10.0


class TelemetrySendError(StreamDetectorError):
    """Kafka refused or lost at least one telemetry record; `failed` counts them."""

    def __init__(self, failed: int, first_error: BaseException) -> None:
        self.failed = failed
        self.first_error = first_error
        super().__init__(
            f"{failed} telemetry record(s) were not delivered; first error: {first_error!r}"
        )


class StepSender(Protocol):
    """Where producers put telemetry: `TelemetrySender` on Kafka, a list in unit tests."""

    def send(
        self, channel: str, seq: int, ts: float, values: np.ndarray, period_s: float
    ) -> None: ...

    def flush(self) -> None: ...


class TelemetrySender:
    """Sends telemetry records to one topic, keyed by channel, and never loses an error quietly.

    The key is the channel id so that the default partitioner keeps each channel on one
    partition, in order. Delivery failures are collected by an errback on every record and
    raised as `TelemetrySendError` by the next `send` or by `flush`.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        *,
        linger_ms: int = DEFAULT_LINGER_MS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        client_id: str = "sd-producer",
    ) -> None:
        self.topic = topic
        self.records_sent = 0
        self.steps_sent = 0
        self.records_acked = 0
        self._failed = 0
        self._first_error: BaseException | None = None
        # The errbacks and callbacks run on kafka-python's I/O thread.
        self._lock = threading.Lock()
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            # acks=all (with kafka-python's default idempotence) so that a record counted as
            # delivered survives a broker failover and retries cannot reorder a channel.
            acks="all",
            linger_ms=linger_ms,
            batch_size=batch_size,
            compression_type=None,
        )

    def send(self, channel: str, seq: int, ts: float, values: np.ndarray, period_s: float) -> None:
        """Queue one record holding the consecutive steps `values` (steps × features)."""
        self._raise_if_failed()
        value = telemetry_bytes(channel, seq, ts, values, period_s)
        future = self._producer.send(self.topic, value=value, key=channel.encode())
        future.add_callback(self._on_delivered)
        future.add_errback(self._on_failed)
        self.records_sent += 1
        self.steps_sent += len(values)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged; raise if any was not."""
        self._producer.flush(timeout=timeout)
        self._raise_if_failed()

    def close(self, timeout: float | None = None) -> None:
        """Flush what is queued and release the connection."""
        self._producer.close(timeout=timeout)

    @property
    def records_failed(self) -> int:
        return self._failed

    def _on_delivered(self, _metadata: object) -> None:
        with self._lock:
            self.records_acked += 1

    def _on_failed(self, error: BaseException) -> None:
        with self._lock:
            self._failed += 1
            if self._first_error is None:
                self._first_error = error

    def _raise_if_failed(self) -> None:
        if self._first_error is not None:
            raise TelemetrySendError(self._failed, self._first_error)

    def __enter__(self) -> TelemetrySender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error (Ctrl-C included) do not wait forever on a broker that may be gone.
        self.close(timeout=None if exc_type is None else CLOSE_TIMEOUT_ON_ERROR_S)
