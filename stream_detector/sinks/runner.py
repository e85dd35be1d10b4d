"""The sink's consumer loop: alerts topic in, one receiver out, offsets committed only after
the receiver accepted (2xx) or the alert went to the sink dead-letter topic.

Each sink kind is its own consumer group, so Slack, PagerDuty and webhooks each see every
alert, and replicas of one kind share the partitions. One batch, in order:

1. poll; a grouping sink (Slack) keeps polling for ``group_window_s`` so that alerts which
   arrive together become one message;
2. read each record (unreadable → dead letter);
3. drop what must not be sent: events this group already delivered (a replay after a
   crash: the Redis ledger), silenced channels, and events the sink does not want (an
   update that does not raise severity);
4. render; deliver each request (rate limit, retries until 2xx or a rejection); after a
   2xx mark its events in the ledger; a rejection goes to the dead-letter topic and waits
   for the broker's ack;
5. commit, per partition, up to the last record whose fate is settled (also every second
   during a long batch, and before a partition is revoked).

A crash anywhere replays uncommitted records; step 3 drops the ones already delivered.
The one gap is a crash after the receiver's 2xx and before the ledger write: that event
is sent again on restart. PagerDuty's dedup_key absorbs it; Slack and webhook receivers
would see it twice (webhooks carry an Idempotency-Key header to dedupe on).
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition
from pydantic import ValidationError

from stream_detector.errors import ConfigError
from stream_detector.kafka_clients import (
    StopSwitch,
    acked_producer,
    await_partitions,
    group_consumer,
)
from stream_detector.records import AlertRecord
from stream_detector.settings import KafkaSettings, Settings, SinkSettings
from stream_detector.sinks.base import Outgoing, Severity, Sink, build_sink, severity_of
from stream_detector.sinks.delivery import (
    Deliverer,
    DeliveryLedger,
    DeliveryResult,
    HttpTransport,
    Interrupted,
    SinkDeadLetterRecord,
    Verdict,
)
from stream_detector.sinks.silences import Silence, SilenceBook, silence_for

log = structlog.get_logger(__name__)

COMMIT_EVERY_S = 1.0


@dataclass
class SinkStats:
    records: int = 0
    delivered: int = 0
    requests: int = 0
    duplicates_suppressed: int = 0
    silenced: int = 0
    not_wanted: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dead_letters": dict(self.dead_letters)}


@dataclass
class _Item:
    """One consumed record and whether its fate is settled (sent, dropped or dead-lettered)."""

    tp: TopicPartition
    offset: int
    value: bytes | None
    alert: AlertRecord | None = None
    done: bool = False


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: SinkRunner) -> None:
        self._runner = runner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._runner.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._runner.on_assigned(list(assigned))


class SinkRunner(StopSwitch):
    """Consumes the alerts topic as one consumer group and delivers to one sink."""

    def __init__(
        self,
        sink: Sink,
        kafka: KafkaSettings,
        sinks: SinkSettings,
        ledger: DeliveryLedger,
        silences: SilenceBook,
        *,
        group_id: str,
        consumer_factory: Callable[..., KafkaConsumer] = KafkaConsumer,
        producer_factory: Callable[..., KafkaProducer] = KafkaProducer,
        stats_interval_s: float = 30.0,
    ) -> None:
        self.sink = sink
        self.kafka = kafka
        self.sinks = sinks
        self.ledger = ledger
        self.silences = silences
        self.group_id = group_id
        self.stats = SinkStats()
        self.stats_interval_s = stats_interval_s
        super().__init__()
        self._items: list[_Item] = []
        self._revoked: set[TopicPartition] = set()
        self._last_poll = time.monotonic()
        self._last_commit = time.monotonic()
        self._known_silences: list[Silence] = []
        self.deliverer = Deliverer(
            sink,
            HttpTransport(sinks.delivery.timeout_s, sink.secrets()),
            sinks.delivery,
            self._wait,
        )
        # The offset moves when the receiver accepted, never on a timer.
        self._consumer = group_consumer(
            kafka,
            group_id=group_id,
            client_id=f"{kafka.client_id}-sink-{sink.kind}",
            factory=consumer_factory,
        )
        self._producer = acked_producer(
            kafka, client_id=f"{kafka.client_id}-sink-{sink.kind}-dlq", factory=producer_factory
        )
        self._consumer.subscribe([kafka.alerts_topic], listener=_Rebalance(self))

    # -- lifecycle -----------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> SinkStats:
        """Deliver until asked to stop (or `max_seconds`); commit what is settled; close."""
        log.info(
            "sink_started", sink=self.sink.kind, group=self.group_id, topic=self.kafka.alerts_topic
        )
        started = last_stats = time.monotonic()
        try:
            await_partitions(self._consumer, self.kafka.alerts_topic, self._stop)
            while not self._stop.is_set():
                self._collect()
                if self._items:
                    try:
                        self._handle_batch()
                    except Interrupted:
                        log.info("delivery_interrupted", pending=self._pending_count())
                    finally:
                        self._commit_settled()
                        self._items = []
                now = time.monotonic()
                if now - last_stats >= self.stats_interval_s:
                    log.info("sink_stats", sink=self.sink.kind, **self.stats.as_dict())
                    last_stats = now
                if max_seconds is not None and now - started >= max_seconds:
                    break
        finally:
            self.close()
        log.info("sink_stopped", sink=self.sink.kind, **self.stats.as_dict())
        return self.stats

    def close(self) -> None:
        try:
            self._producer.close(timeout=self.kafka.publish_timeout_s)
        finally:
            self._consumer.close(autocommit=False)

    # -- one batch -----------------------------------------------------------------------

    def _collect(self) -> None:
        self._add(self._consumer.poll(timeout_ms=self.kafka.poll_timeout_ms))
        self._last_poll = time.monotonic()
        if not self._items or self.sink.group_window_s <= 0:
            return
        deadline = time.monotonic() + self.sink.group_window_s
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._add(self._consumer.poll(timeout_ms=max(1, int(left * 1000))))
            self._last_poll = time.monotonic()

    def _add(self, polled: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in polled.items():
            for rec in records:
                self._items.append(_Item(tp, rec.offset, rec.value))
        self.stats.records += sum(len(r) for r in polled.values())

    def _handle_batch(self) -> None:
        # 2. read
        for item in self._items:
            try:
                item.alert = AlertRecord.model_validate_json(item.value or b"")
            except ValidationError as exc:
                self._dead_letter(item, "unreadable_alert", detail=str(exc)[:300])
        readable = [i for i in self._items if i.alert is not None and not i.done]
        # 3. drop what must not be sent
        chosen = self._choose(readable)
        # 4. render and deliver, in order
        by_alert = {id(i.alert): i for i in chosen}
        levels = self.sinks.severity
        for out in self.sink.render([i.alert for i in chosen if i.alert is not None]):
            items = [by_alert[id(a)] for a in out.alerts]
            if all(i.tp in self._revoked for i in items):
                continue  # another member owns these now and will deliver them
            result = self.deliverer.deliver(out)
            self.stats.requests += 1
            if result.verdict is Verdict.ACCEPTED:
                sent = {
                    a.alert_id: severity_of(a, levels) for a in out.alerts if a.state != "resolve"
                }
                self.ledger.mark_sent(out.alerts, sent)
                self._log_delivered(out, result)
            else:
                for item in items:
                    self._dead_letter(item, result.reason, result=result)
            for item in items:
                item.done = True
            if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
                self._commit_settled()

    def _choose(self, readable: list[_Item]) -> list[_Item]:
        alerts = [i.alert for i in readable if i.alert is not None]
        sent = self.ledger.already_sent(alerts)
        last_sent: dict[str, Severity] = self.ledger.sent_severities([a.alert_id for a in alerts])
        silences = self._active_silences()
        now = time.time()
        seen: set[tuple[str, int]] = set()
        chosen: list[_Item] = []
        for item, already in zip(readable, sent, strict=True):
            alert = item.alert
            assert alert is not None
            event = (alert.alert_id, alert.revision)
            if already or event in seen:
                self.stats.duplicates_suppressed += 1
                log.info("duplicate_suppressed", alert_id=alert.alert_id, revision=alert.revision)
                item.done = True
                continue
            seen.add(event)
            silence = silence_for(alert.channel, silences, now)
            if silence is not None:
                self.stats.silenced += 1
                log.info(
                    "alert_silenced",
                    sink=self.sink.kind,
                    channel=alert.channel,
                    alert_id=alert.alert_id,
                    state=alert.state,
                    silence_id=silence.id,
                    pattern=silence.pattern,
                    silenced_total=self.stats.silenced,
                )
                item.done = True
                continue
            if not self.sink.wants(alert, last_sent.get(alert.alert_id)):
                self.stats.not_wanted += 1
                log.info("alert_not_sent_severity_unchanged", alert_id=alert.alert_id)
                item.done = True
                continue
            if alert.state != "resolve":
                level = severity_of(alert, self.sinks.severity)
                last_sent[alert.alert_id] = max(level, last_sent.get(alert.alert_id, level))
            chosen.append(item)
        return chosen

    def _active_silences(self) -> list[Silence]:
        try:
            self._known_silences = self.silences.active()
        except (redis.RedisError, ValidationError) as exc:
            # Keep the last list we read: a Redis blip must not unmute everything at once.
            log.warning("silences_unreadable", error=type(exc).__name__)
        return self._known_silences

    def _log_delivered(self, out: Outgoing, result: DeliveryResult) -> None:
        self.stats.delivered += len(out.alerts)
        for alert in out.alerts:
            log.info(
                "alert_delivered",
                sink=self.sink.kind,
                channel=alert.channel,
                alert_id=alert.alert_id,
                revision=alert.revision,
                state=alert.state,
                status=result.response.status,
                attempts=result.attempts,
                grouped=len(out.alerts),
            )

    def _dead_letter(
        self, item: _Item, reason: str, *, result: DeliveryResult | None = None, detail: str = ""
    ) -> None:
        response = result.response if result is not None else None
        record = SinkDeadLetterRecord(
            sink=self.sink.kind,
            group=self.group_id,
            reason=reason,
            status=response.status if response else None,
            response_excerpt=(response.excerpt or response.error or "") if response else detail,
            attempts=result.attempts if result else 0,
            alert=item.alert,
            value_b64=None if item.alert else base64.b64encode(item.value or b"").decode(),
            topic=item.tp.topic,
            partition=item.tp.partition,
            offset=item.offset,
            failed_at=time.time(),
        )
        key = item.alert.channel.encode() if item.alert else None
        # Wait for the ack: the offset may only move once the dead letter is safe.
        self._producer.send(self.sinks.dead_letter_topic, key=key, value=record.to_bytes()).get(
            timeout=self.kafka.publish_timeout_s
        )
        self.stats.dead_letters[reason] += 1
        log.warning(
            "alert_dead_lettered",
            sink=self.sink.kind,
            reason=reason,
            status=record.status,
            response=record.response_excerpt[:200],
            alert_id=item.alert.alert_id if item.alert else None,
            partition=item.tp.partition,
            offset=item.offset,
        )
        item.done = True

    # -- offsets -------------------------------------------------------------------------

    def _pending_count(self) -> int:
        return sum(not i.done for i in self._items)

    def _settled_offsets(
        self, only: set[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record of an unbroken settled prefix."""
        offsets: dict[TopicPartition, int] = {}
        blocked: set[TopicPartition] = set()
        for item in self._items:
            if item.tp in blocked or (only is not None and item.tp not in only):
                continue
            if item.done:
                offsets[item.tp] = item.offset + 1
            else:
                blocked.add(item.tp)
        return offsets

    def _commit_settled(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {
            tp: off
            for tp, off in self._settled_offsets(only).items()
            if only is not None or tp not in self._revoked
        }
        self._last_commit = time.monotonic()
        if not offsets:
            return
        try:
            self._consumer.commit(
                offsets={tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
            )
        except CommitFailedError as exc:
            # The group moved on; the new owner replays and the ledger drops what we sent.
            log.warning("commit_failed_after_rebalance", error=str(exc)[:200])

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is settled on the partitions we lose, before another member starts."""
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))
        self._commit_settled(only=set(revoked))
        self._revoked |= set(revoked)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
        self._revoked -= set(assigned)

    def _wait(self, seconds: float) -> bool:
        """Pause up to `seconds`, staying in the group; False if the sink is stopping."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._keep_alive()
            self._stop.wait(min(left, 0.5))
        return False

    def _keep_alive(self) -> None:
        # A receiver outage can outlast max_poll_interval; a paused poll fetches nothing but
        # tells the group we are alive, so it does not hand our partitions to someone else.
        if time.monotonic() - self._last_poll < self.kafka.max_poll_interval_ms / 2000.0:
            return
        assigned = self._consumer.assignment()
        self._consumer.pause(*assigned)
        try:
            self._consumer.poll(timeout_ms=0)
        finally:
            self._consumer.resume(*(tp for tp in assigned if tp in self._consumer.assignment()))
        self._last_poll = time.monotonic()


def redis_for(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis.url.get_secret_value(),
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.socket_timeout_s,
    )


def group_id_for(kind: str, sinks: SinkSettings) -> str:
    section = getattr(sinks, kind, None)
    group = getattr(section, "group_id", None)
    return group if isinstance(group, str) else f"stream-detector-sink-{kind}"


def ensure_dead_letter_topic(kafka: KafkaSettings, topic: str, partitions: int = 4) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id=kafka.client_id)
    try:
        if topic not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def build_runner(kind: str, settings: Settings) -> SinkRunner:
    """The composition root of one sink process: sink, Redis ledger, silences, Kafka."""
    sinks = settings.sinks
    if sinks.dead_letter_topic in (settings.kafka.alerts_topic, settings.kafka.telemetry_topic):
        raise ConfigError(
            "SD_SINKS__DEAD_LETTER_TOPIC", "must differ from the alerts and telemetry topics"
        )
    sink = build_sink(kind, sinks)
    client = redis_for(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError("SD_REDIS__URL", f"cannot reach Redis: {type(exc).__name__}") from None
    try:
        ensure_dead_letter_topic(settings.kafka, sinks.dead_letter_topic)
    except KafkaError as exc:
        log.warning("dead_letter_topic_not_checked", error=type(exc).__name__)
    group = group_id_for(kind, sinks)
    prefix = settings.redis.key_prefix
    return SinkRunner(
        sink,
        settings.kafka,
        sinks,
        DeliveryLedger(client, prefix, group, sinks.delivery.dedupe_ttl_s),
        SilenceBook(client, prefix),
        group_id=group,
    )
