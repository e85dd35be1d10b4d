"""The imperative shell: Kafka in, alerts out, state to Redis, offsets committed last.

One loop, one thread. Each flush follows a fixed order (Quix Streams' checkpoint):

1. score every pending window in batches, judge them, build alert records;
2. publish alerts, dead letters and scores, and wait until the broker acknowledged them;
3. save the channel states to Redis, stamped with the last input offset they reflect;
4. commit the input offsets.

A crash before 2 completes replays the records and produces the same alerts again (same
``alert_id``). A crash between 3 and 4 replays records whose offsets the saved states already
cover, and the engine skips them. Either way nothing is lost and duplicates are harmless.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np
import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from stream_detector.buffers import Window
from stream_detector.engine import ChannelState, DetectionEngine
from stream_detector.errors import BadRecord
from stream_detector.kafka_clients import (
    StopSwitch,
    acked_producer,
    await_partitions,
    group_consumer,
)
from stream_detector.records import DeadLetterRecord, parse_telemetry
from stream_detector.settings import KafkaSettings
from stream_detector.thresholds.store import StateStore, StoreUnavailable

log = structlog.get_logger(__name__)

_DEAD_LETTER_LOGS_PER_INTERVAL = 20
_STORE_RETRY_FIRST_S = 0.1
_STORE_RETRY_MAX_S = 5.0
T = TypeVar("T")


@dataclass
class DaemonStats:
    records: int = 0
    steps: int = 0
    windows: int = 0
    alerts: int = 0
    skipped_replayed: int = 0
    flushes: int = 0
    keepalive_polls: int = 0
    store_retries: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dead_letters": dict(self.dead_letters)}


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, daemon: DetectorDaemon) -> None:
        self._daemon = daemon

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._daemon.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


class DetectorDaemon(StopSwitch):
    """Consumes telemetry, scores it through a `DetectionEngine`, publishes alerts."""

    def __init__(
        self,
        engine: DetectionEngine,
        store: StateStore,
        kafka: KafkaSettings,
        *,
        max_wait_ms: int,
        stats_interval_s: float = 10.0,
        consumer_factory: Callable[..., KafkaConsumer] = KafkaConsumer,
        producer_factory: Callable[..., KafkaProducer] = KafkaProducer,
    ) -> None:
        self.engine = engine
        self.store = store
        self.kafka = kafka
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats_interval_s = stats_interval_s
        self.stats = DaemonStats()
        super().__init__()
        self._states: dict[str, ChannelState] = {}
        self._dirty: set[str] = set()  # channels changed since the last save
        self._pending: list[Window] = []
        self._dead: list[DeadLetterRecord] = []
        self._uncommitted: dict[TopicPartition, int] = {}  # next offset to commit
        self._oldest_uncommitted: float | None = None
        self._last_poll = time.monotonic()
        self._flushing = False
        self._dead_log_window = time.monotonic()
        self._dead_logged: Counter[str] = Counter()
        self._revoked_mid_flush: set[int] = set()
        self._consumer = group_consumer(
            kafka, group_id=kafka.group_id, client_id=kafka.client_id, factory=consumer_factory
        )
        self._producer = acked_producer(
            kafka, client_id=f"{kafka.client_id}-producer", factory=producer_factory, linger_ms=5
        )
        self._consumer.subscribe([kafka.telemetry_topic], listener=_Rebalance(self))

    # -- lifecycle -----------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> DaemonStats:
        """Consume until asked to stop (or `max_seconds`); drain, publish, commit, close."""
        log.info("daemon_started", topic=self.kafka.telemetry_topic, **self.engine.describe())
        started = last_stats = time.monotonic()
        try:
            await_partitions(self._consumer, self.kafka.telemetry_topic, self._stop)
            while not self._stop.is_set():
                polled = self._consumer.poll(timeout_ms=self.kafka.poll_timeout_ms)
                self._last_poll = time.monotonic()
                for tp, records in polled.items():
                    for rec in records:
                        self._accept(tp, rec)
                if self._flush_due():
                    self.flush()
                now = time.monotonic()
                if now - last_stats >= self.stats_interval_s:
                    log.info("daemon_stats", **self.stats.as_dict())
                    last_stats = now
                if max_seconds is not None and now - started >= max_seconds:
                    break
            self.flush()
        finally:
            self.close()
        log.info("daemon_stopped", **self.stats.as_dict())
        return self.stats

    def close(self) -> None:
        try:
            self._producer.close(timeout=self.kafka.publish_timeout_s)
        finally:
            self._consumer.close(autocommit=False)

    # -- per record ----------------------------------------------------------------------

    def _accept(self, tp: TopicPartition, rec: Any) -> None:
        self.stats.records += 1
        self._uncommitted[tp] = rec.offset + 1
        if self._oldest_uncommitted is None:
            self._oldest_uncommitted = time.monotonic()
        try:
            parsed = parse_telemetry(rec.value, self.engine.n_features)
            if rec.key is not None and rec.key != parsed.channel.encode():
                raise BadRecord("key_mismatch", f"key {rec.key!r} != channel {parsed.channel!r}")
            self.engine.check_channel(parsed.channel)
            state = self._state_for(parsed.channel, tp.partition)
            if self.engine.already_applied(state, tp.partition, rec.offset):
                self.stats.skipped_replayed += 1
                return
            windows = self.engine.ingest(state, parsed, tp.partition, rec.offset)
            self._dirty.add(parsed.channel)
        except BadRecord as err:
            self._dead_letter(tp, rec, err)
            return
        self.stats.steps += int(parsed.values.shape[0])
        self._pending.extend(windows)

    def _state_for(self, channel: str, partition: int) -> ChannelState:
        state = self._states.get(channel)
        if state is None:
            # No keep-alive polls here: a rebalance handled in the middle of a record could
            # commit its offset before it is applied. A long outage costs the group
            # membership instead, which the commit path already survives.
            stored = self._through_outage(
                lambda: self.store.load([channel]), "load", keep_alive=False
            ).get(channel)
            if stored is not None:
                state = self.engine.restore_state(channel, stored)
                log.info(
                    "channel_state_restored",
                    channel=channel,
                    partition=stored.partition,
                    last_offset=stored.last_offset,
                    buffered=len(state.buffer),
                    # `stream-detector prime` stamps no offset: no live record made it yet.
                    primed=stored.last_offset < 0,
                )
            else:
                state = self.engine.new_state(channel, partition)
            self._states[channel] = state
        return state

    def _dead_letter(self, tp: TopicPartition, rec: Any, err: BadRecord) -> None:
        self.stats.dead_letters[err.reason] += 1
        # A broken producer can send thousands of bad records a second: log the first few
        # of each reason per interval; the counts go out with daemon_stats regardless.
        now = time.monotonic()
        if now - self._dead_log_window >= self.stats_interval_s:
            self._dead_log_window = now
            self._dead_logged.clear()
        if self._dead_logged[err.reason] < _DEAD_LETTER_LOGS_PER_INTERVAL:
            self._dead_logged[err.reason] += 1
            log.warning(
                "record_dead_lettered",
                reason=err.reason,
                detail=err.detail[:200],
                partition=tp.partition,
                offset=rec.offset,
                key=rec.key.decode("utf-8", "replace") if rec.key else None,
            )
        self._dead.append(
            DeadLetterRecord.from_failure(
                err,
                topic=tp.topic,
                partition=tp.partition,
                offset=rec.offset,
                key=rec.key,
                value=rec.value,
            )
        )

    # -- flush: the checkpoint -----------------------------------------------------------

    def _flush_due(self) -> bool:
        if len(self._pending) >= self.engine.max_batch_size:
            return True
        return (
            self._oldest_uncommitted is not None
            and time.monotonic() - self._oldest_uncommitted >= self.max_wait_s
        )

    def flush(self) -> None:
        """Score pending windows, publish, save state, commit: in that order, always."""
        if not self._uncommitted and not self._pending and not self._dead:
            return
        windows, self._pending = self._pending, []
        self._flushing = True
        try:
            self._flush(windows)
        finally:
            self._flushing = False
        if self._revoked_mid_flush:
            self._drop_partitions(self._revoked_mid_flush)
            self._revoked_mid_flush = set()

    def _flush(self, windows: list[Window]) -> None:
        # 1. score and judge
        t0 = time.perf_counter()
        chunks = []
        step = self.engine.max_batch_size
        for start in range(0, len(windows), step):
            chunks.append(self.engine.score(windows[start : start + step]))
            self._keep_alive()
        scores = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        outcome = self.engine.decide(self._states, windows, scores)
        scored_s = time.perf_counter() - t0
        # 2. publish and wait for the broker's acknowledgement
        futures = []
        for alert in outcome.alerts:
            futures.append(
                self._producer.send(
                    self.kafka.alerts_topic, key=alert.channel.encode(), value=alert.to_bytes()
                )
            )
            log.info(
                "alert_published",
                channel=alert.channel,
                state=alert.state,
                alert_id=alert.alert_id,
                first_seq=alert.first_seq,
                last_seq=alert.last_seq,
                score=round(alert.score, 6),
                partition=alert.source.partition if alert.source else None,
                offset=alert.source.offset if alert.source else None,
            )
        for dead in self._dead:
            futures.append(
                self._producer.send(
                    self.kafka.dead_letter_topic,
                    key=dead.key.encode() if dead.key is not None else None,
                    value=dead.to_bytes(),
                )
            )
        if self.kafka.scores_topic:
            for sc in outcome.scores:
                futures.append(
                    self._producer.send(
                        self.kafka.scores_topic, key=sc.channel.encode(), value=sc.to_bytes()
                    )
                )
        self._producer.flush(timeout=self.kafka.publish_timeout_s)
        for fut in futures:
            # Raises if the broker refused or timed out: the offsets below stay uncommitted.
            fut.get(timeout=self.kafka.publish_timeout_s)
        self._dead = []
        # 3. save channel states stamped with their offsets
        dirty = [self._states[c] for c in sorted(self._dirty) if c in self._states]
        self._through_outage(lambda: self.store.save(dirty), "save", keep_alive=True)
        self._dirty.clear()
        # 4. commit input offsets
        if self._uncommitted:
            offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._uncommitted.items()}
            try:
                self._consumer.commit(offsets=offsets)
            except CommitFailedError as exc:
                # The group rebalanced while we scored: another member owns these records
                # now and will see them again. The states saved above make that a no-op.
                log.warning("commit_failed_after_rebalance", error=str(exc)[:200])
        self.stats.flushes += 1
        self.stats.windows += len(windows)
        self.stats.alerts += len(outcome.alerts)
        log.debug(
            "batch_flushed",
            windows=len(windows),
            alerts=len(outcome.alerts),
            anomalous=outcome.anomalous_windows,
            score_ms=round(scored_s * 1000, 2),
        )
        self._uncommitted = {}
        self._oldest_uncommitted = None

    def _through_outage(self, call: Callable[[], T], what: str, *, keep_alive: bool) -> T:
        """Retry a state-store call until the store is back; offsets wait uncommitted.

        The in-memory states are the truth while Redis restarts: once it answers again (with
        its persisted data or empty) the next save writes them. A stop request during the
        outage gives up with the offsets uncommitted: the records come again after a restart
        and, with the alerts already published, produce the same alert ids.
        """
        delay, since = _STORE_RETRY_FIRST_S, None
        while True:
            try:
                result = call()
            except StoreUnavailable as exc:
                if since is None:
                    since = time.monotonic()
                    log.warning("state_store_unavailable", during=what, error=str(exc)[:200])
                self.stats.store_retries += 1
                if self._stop.is_set():
                    raise
                if keep_alive:
                    self._keep_alive()
                self._stop.wait(delay)
                delay = min(delay * 2, _STORE_RETRY_MAX_S)
                continue
            if since is not None:
                log.info(
                    "state_store_back", during=what, waited_s=round(time.monotonic() - since, 2)
                )
            return result

    def _keep_alive(self) -> None:
        """Poll with every partition paused once half of max_poll_interval has passed.

        A long scoring pass (a slow GPU, a big backlog) must not let the group think we
        died: that would rebalance and fail our commit. A paused poll fetches nothing but
        counts as a poll.
        """
        if time.monotonic() - self._last_poll < self.kafka.max_poll_interval_ms / 2000.0:
            return
        assigned = self._consumer.assignment()
        self._consumer.pause(*assigned)
        try:
            polled = self._consumer.poll(timeout_ms=0)
        finally:
            self._consumer.resume(*(tp for tp in assigned if tp in self._consumer.assignment()))
        self._last_poll = time.monotonic()
        self.stats.keepalive_polls += 1
        log.info("kept_alive_while_scoring", unexpected_records=sum(map(len, polled.values())))

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Finish what we hold for the revoked partitions before another member takes them."""
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))
        gone = {tp.partition for tp in revoked}
        if self._flushing:
            # Called from the keep-alive poll inside a flush: let the flush finish first.
            self._revoked_mid_flush |= gone
            return
        self.flush()
        self._drop_partitions(gone)

    def _drop_partitions(self, gone: set[int]) -> None:
        for channel in [c for c, s in self._states.items() if s.partition in gone]:
            del self._states[channel]
