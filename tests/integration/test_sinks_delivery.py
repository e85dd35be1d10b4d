"""Sinks against a real broker and Redis, delivering to local fake Slack/PagerDuty/webhooks.

Alerts are produced onto a real alerts topic; each sink runs as a real consumer group in a
thread of this process (the SIGKILL test runs it as a child process, in test_sinks_crash.py).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
import structlog
from click.testing import CliRunner
from kafka import KafkaProducer

from stream_detector.cli import main
from stream_detector.records import AlertRecord
from stream_detector.settings import Settings
from stream_detector.sinks.delivery import SinkDeadLetterRecord
from stream_detector.sinks.receivers import FakeReceiver, sample_alert
from stream_detector.sinks.runner import SinkRunner, build_runner
from stream_detector.topics import group_caught_up, read_topic

pytestmark = pytest.mark.integration

ROUTING_KEY = "0123456789abcdef0123456789abcdef"  # PagerDuty keys are 32 characters
FAST_DELIVERY = {"timeout_s": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.4}


class Deployment:
    """One sink deployment: topics, a consumer group, a Redis namespace, a receiver."""

    def __init__(self, bootstrap: str, redis_url: str, make_topic, kind: str, rx: FakeReceiver):
        self.bootstrap = bootstrap
        self.kind = kind
        self.rx = rx
        self.alerts_topic = make_topic(f"alerts-{kind}")
        self.dlq_topic = make_topic(f"sink-dlq-{kind}")
        self.group = f"sink-{kind}-{uuid.uuid4().hex[:8]}"
        self.redis_url = redis_url
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.threads: list[tuple[SinkRunner, threading.Thread]] = []

    def settings(self, **sink_overrides) -> Settings:
        section = {
            "slack": {"webhook_url": self.rx.url, "group_window_s": 0.3, "rate_per_s": 5},
            "pagerduty": {"routing_key": ROUTING_KEY, "events_url": self.rx.url, "rate_per_s": 100},
            "webhook": {"url": self.rx.url, "hmac_secret": "hm4cS3cret"},
        }[self.kind]
        section = {**section, "group_id": self.group, **sink_overrides}
        return Settings(
            kafka={
                "bootstrap_servers": self.bootstrap,
                "alerts_topic": self.alerts_topic,
                "poll_timeout_ms": 50,
            },
            redis={"url": self.redis_url, "key_prefix": self.prefix},
            sinks={
                self.kind: section,
                "delivery": FAST_DELIVERY,
                "dead_letter_topic": self.dlq_topic,
            },
            logging={"format": "json"},
        )

    def produce(self, alerts: list[AlertRecord]) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        try:
            for alert in alerts:
                producer.send(self.alerts_topic, key=alert.channel.encode(), value=alert.to_bytes())
            producer.flush(timeout=30)
        finally:
            producer.close()

    def start(self, **sink_overrides) -> SinkRunner:
        runner = build_runner(self.kind, self.settings(**sink_overrides))
        thread = threading.Thread(target=runner.run, kwargs={"max_seconds": 120}, daemon=True)
        thread.start()
        self.threads.append((runner, thread))
        return runner

    def stop(self) -> None:
        for runner, thread in self.threads:
            runner.request_stop()
            thread.join(timeout=30)
            assert not thread.is_alive(), "sink did not stop"
        self.threads = []

    def caught_up(self) -> bool:
        return group_caught_up(self.bootstrap, self.group, self.alerts_topic)


@pytest.fixture
def deploy(kafka_bootstrap, redis_url, kafka_topics) -> Iterator:
    made: list[Deployment] = []

    def make(kind: str, rx: FakeReceiver) -> Deployment:
        d = Deployment(kafka_bootstrap, redis_url, kafka_topics, kind, rx)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
        d.rx.stop()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def incident_stream(n_channels: int = 6, episodes: int = 2) -> list[AlertRecord]:
    """open (warning) → update (critical: severity rises, so every sink sends it) → resolve."""
    alerts = []
    for ep in range(episodes):
        for c in range(n_channels):
            seq = 1000 * ep + c
            common = {"first_seq": seq, "threshold": 1.0, "first_ts": 1_760_000_000.0 + seq}
            ch = f"CH-{c}"
            alerts += [
                sample_alert(ch, "open", 0, score=1.5, **common),
                sample_alert(ch, "update", 1, score=5.0, duration_s=20, **common),
                sample_alert(ch, "resolve", 2, score=0.2, peak_score=5.0, duration_s=90, **common),
            ]
    return alerts


def delivered_per_channel(rx: FakeReceiver, alerts: list[AlertRecord]) -> dict[str, list]:
    """What the receiver accepted, as (alert_id, state) per channel, in arrival order."""
    by_id = {a.alert_id: a.channel for a in alerts}
    out: dict[str, list] = defaultdict(list)
    for req in list(rx.accepted):
        doc = req.json()
        if rx.flavour == "slack":
            for block in doc["blocks"][1:]:
                alert_id, _, rev = block["block_id"].rpartition(":")
                state = ["open", "update", "resolve"][int(rev)]
                out[by_id[alert_id]].append((alert_id, state))
        elif rx.flavour == "pagerduty":
            key = doc["dedup_key"]
            revision = doc.get("payload", {}).get("custom_details", {}).get("revision", 2)
            out[by_id[key]].append((key, ["open", "update", "resolve"][revision]))
        else:
            out[doc["channel"]].append((doc["alert_id"], doc["state"]))
    return out


def expected_per_channel(alerts: list[AlertRecord]) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for a in alerts:
        out[a.channel].append((a.alert_id, a.state))
    return out


@pytest.mark.parametrize(
    ("kind", "outage"),
    [
        ("webhook", "fails_first_5_with_503"),
        ("slack", "answers_429_retry_after_1s"),
        ("pagerduty", "down_for_2s"),
    ],
)
def test_every_alert_delivered_exactly_once_in_order_through_outages(deploy, kind, outage):
    rx = FakeReceiver(kind)
    if outage == "fails_first_5_with_503":
        rx.fail_first = 5
    elif outage == "answers_429_retry_after_1s":
        rx.throttle_first, rx.retry_after_s = 2, 1.0
    rx.start()
    d = deploy(kind, rx)
    alerts = incident_stream()
    d.produce(alerts)
    if outage == "down_for_2s":
        rx.down_for(2.0)
    started = time.time()
    d.start()
    wait_until(
        lambda: (
            sum(map(len, delivered_per_channel(rx, alerts).values())) >= len(alerts)
            and d.caught_up()
        ),
        60,
        "every alert delivered and committed",
    )
    time.sleep(0.3)  # anything extra (a duplicate) would arrive now
    assert delivered_per_channel(rx, alerts) == expected_per_channel(alerts)
    assert d.caught_up()
    assert read_topic(d.bootstrap, d.dlq_topic) == []
    if outage == "fails_first_5_with_503":
        assert len(rx.requests) == len(rx.accepted) + 5
    elif outage == "answers_429_retry_after_1s":
        first, second, third = rx.requests[:3]
        assert second.at - first.at >= 0.95 and third.at - second.at >= 0.95
        assert len(rx.accepted) < len(alerts)  # grouped
    else:
        assert rx.requests[0].at - started >= 1.5  # nothing got through while it was down
        assert rx.pd_alerts_created == 12 and all(
            a.status == "resolved" for a in rx.pd_alerts.values()
        )


def test_4xx_goes_to_the_sink_dead_letter_topic_and_is_not_retried(deploy):
    bad_ids: set[str] = set()
    rx = FakeReceiver("pagerduty", reject=lambda body: any(i.encode() in body for i in bad_ids))
    rx.start()
    d = deploy("pagerduty", rx)
    alerts = incident_stream(n_channels=3, episodes=1)
    bad = [a for a in alerts if a.channel == "CH-1"]
    bad_ids.add(bad[0].alert_id)
    d.produce(alerts)
    d.start()
    wait_until(d.caught_up, 30, "everything committed")
    dead = [
        SinkDeadLetterRecord.model_validate_json(r.value)
        for r in read_topic(d.bootstrap, d.dlq_topic)
    ]
    assert [r.alert for r in dead] == bad
    for r in dead:
        assert r.status == 400 and r.reason == "rejected_by_receiver" and r.attempts == 1
        assert "Event object is invalid" in r.response_excerpt
        assert ROUTING_KEY not in r.model_dump_json()
    # Never retried: one request per bad event.
    assert sum(bad[0].alert_id.encode() in q.body for q in rx.requests) == len(bad)
    good = [a for a in alerts if a.channel != "CH-1"]
    assert delivered_per_channel(rx, alerts) == expected_per_channel(good)


def test_replayed_alerts_are_suppressed_by_the_ledger(deploy, kafka_bootstrap):
    rx = FakeReceiver("webhook").start()
    d = deploy("webhook", rx)
    alerts = incident_stream(n_channels=2, episodes=1)
    d.produce(alerts)
    d.start()
    wait_until(lambda: len(rx.accepted) == len(alerts) and d.caught_up(), 30, "first pass")
    # The daemon replays after a crash: the same events arrive again.
    d.produce(alerts)
    wait_until(d.caught_up, 30, "replay consumed")
    runner = d.threads[0][0]
    assert len(rx.accepted) == len(alerts)
    assert runner.stats.duplicates_suppressed == len(alerts)
    # A second group (another sink deployment) delivers on its own.
    rx.accepted.clear()
    d.stop()
    d.group = f"{d.group}-other"
    d.start()
    wait_until(lambda: len(rx.accepted) == len(alerts) and d.caught_up(), 30, "other group")
    assert sorted(rx.accepted_events()) == sorted((a.alert_id, a.revision) for a in alerts)


def test_silenced_channels_are_counted_and_logged_not_sent(deploy, monkeypatch):
    rx = FakeReceiver("webhook").start()
    d = deploy("webhook", rx)
    for key in [k for k in os.environ if k.startswith("SD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SD_REDIS__URL", d.redis_url)
    monkeypatch.setenv("SD_REDIS__KEY_PREFIX", d.prefix)
    cli = CliRunner()
    added = cli.invoke(main, ["silence", "add", "CH-[01]", "--for", "1h", "--comment", "maint"])
    assert added.exit_code == 0, added.output
    silence_id = added.output.split()[0]
    gone = cli.invoke(main, ["silence", "add", "CH-2", "--for", "1h"])
    gone_id = gone.output.split()[0]
    assert cli.invoke(main, ["silence", "remove", gone_id]).exit_code == 0
    listed = cli.invoke(main, ["silence", "list"])
    assert (
        silence_id in listed.output and "CH-[01]" in listed.output and gone_id not in listed.output
    )

    alerts = incident_stream(n_channels=4, episodes=1)
    d.produce(alerts)
    with structlog.testing.capture_logs() as logs:
        runner = d.start()
        wait_until(d.caught_up, 30, "everything committed")
        d.stop()
    sent = {ch for ch in delivered_per_channel(rx, alerts)}
    assert sent == {"CH-2", "CH-3"}
    assert runner.stats.silenced == 6
    silenced = [e for e in logs if e["event"] == "alert_silenced"]
    assert len(silenced) == 6 and {e["silence_id"] for e in silenced} == {silence_id}


def test_burst_of_200_incidents_grouped_for_slack_within_rate_and_200_pagerduty_triggers(
    deploy,
):
    slack_rx = FakeReceiver("slack").start()
    pd_rx = FakeReceiver("pagerduty").start()
    slack = deploy("slack", slack_rx)
    pd = deploy("pagerduty", pd_rx)
    pd.alerts_topic = slack.alerts_topic  # both sinks read the same alerts topic
    slack.start(group_window_s=1.0, rate_per_s=1.0)
    pd.start()
    time.sleep(1.0)  # both groups joined, waiting for alerts
    alerts = [sample_alert(f"B-{i:03d}", "open", 0, first_seq=i, score=3.0) for i in range(200)]
    t0 = time.time()
    slack.produce(alerts)
    assert time.time() - t0 < 1.0, "the burst must open within one second"
    wait_until(
        lambda: (
            len(pd_rx.accepted) >= 200
            and sum(len(r.json()["blocks"]) - 1 for r in slack_rx.accepted) >= 200
        ),
        40,
        "burst delivered",
    )
    # Slack: grouped messages, every incident exactly once, no faster than 1 message/s.
    events = slack_rx.accepted_events()
    assert sorted(events) == sorted((a.alert_id, 0) for a in alerts)
    times = [r.at for r in slack_rx.accepted]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(
        "slack messages:",
        len(times),
        "incidents per message:",
        [len(r.json()["blocks"]) - 1 for r in slack_rx.accepted],
        "gaps_s:",
        [round(g, 3) for g in gaps],
    )
    assert len(times) <= 8
    assert all(g >= 0.99 for g in gaps), gaps
    assert len(slack_rx.requests) == len(slack_rx.accepted)  # never throttled, never refused
    # PagerDuty: 200 triggers, one alert each.
    triggers = [r.json() for r in pd_rx.accepted]
    assert len(triggers) == 200 and all(t["event_action"] == "trigger" for t in triggers)
    assert {t["dedup_key"] for t in triggers} == {a.alert_id for a in alerts}
    assert pd_rx.pd_alerts_created == 200


class _CrashAfterReceiverAccepted(BaseException):
    """Stands in for SIGKILL between the receiver's 2xx and the ledger write."""


@pytest.mark.parametrize("kind", ["pagerduty", "webhook"])
def test_crash_between_2xx_and_ledger_mark_duplicates_one_event_pagerduty_absorbs_it(deploy, kind):
    rx = FakeReceiver(kind).start()
    d = deploy(kind, rx)
    alerts = incident_stream(n_channels=2, episodes=1)
    d.produce(alerts)
    runner = build_runner(kind, d.settings())
    marks = {"n": 0}
    real_mark = runner.ledger.mark_sent

    def mark_then_crash(sent, severities):
        marks["n"] += 1
        if marks["n"] == 2:  # the second event (an update trigger): accepted, never marked
            raise _CrashAfterReceiverAccepted
        return real_mark(sent, severities)

    runner.ledger.mark_sent = mark_then_crash  # type: ignore[method-assign]
    with pytest.raises(_CrashAfterReceiverAccepted):
        runner.run(max_seconds=30)
    assert len(rx.accepted) == 2
    d.start()
    wait_until(lambda: d.caught_up() and len(rx.accepted) == len(alerts) + 1, 30, "restart")
    duplicated = rx.accepted[1].body
    assert rx.accepted[2].body == duplicated  # the one event in the window, sent twice
    if kind == "pagerduty":
        # Same dedup_key while the alert is open: PagerDuty keeps one alert, pages once.
        assert rx.pd_alerts_created == 2
        assert all(a.status == "resolved" for a in rx.pd_alerts.values())
    else:
        # Webhook receivers get the same Idempotency-Key twice and can drop the second.
        first, second = rx.accepted[1].headers, rx.accepted[2].headers
        assert first["Idempotency-Key"] == second["Idempotency-Key"]


def test_slack_sends_an_update_only_when_severity_rises(deploy):
    rx = FakeReceiver("slack").start()
    d = deploy("slack", rx)
    common = {"first_seq": 7, "threshold": 1.0}
    alerts = [
        sample_alert("U-1", "open", 0, score=1.5, **common),  # warning
        sample_alert("U-1", "update", 1, score=1.9, **common),  # still warning: not sent
        sample_alert("U-1", "update", 2, score=5.0, **common),  # critical: sent
        sample_alert("U-1", "update", 3, score=2.5, peak_score=4.5, **common),  # not higher
        sample_alert("U-1", "resolve", 4, score=0.1, peak_score=5.0, **common),
    ]
    d.produce(alerts)
    runner = d.start()
    wait_until(d.caught_up, 30, "everything committed")
    assert rx.accepted_events() == [(alerts[0].alert_id, r) for r in (0, 2, 4)]
    assert runner.stats.not_wanted == 2
