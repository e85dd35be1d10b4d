"""`stream-detector sink webhook` as a child process, killed with SIGKILL mid-delivery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from stream_detector.sinks.receivers import FakeReceiver, sample_alert
from stream_detector.topics import group_caught_up

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
URL_TOKEN = "xoxT0kenInTheUrl9"
HMAC_SECRET = "hmacS3cretValue7"


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sink exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_sigkill_mid_delivery_then_restart_delivers_the_rest_once(
    kafka_bootstrap, redis_url, kafka_topics, tmp_path
):
    alerts_topic = kafka_topics("alerts-crash")
    dlq_topic = kafka_topics("sink-dlq-crash")
    group = f"sink-crash-{uuid.uuid4().hex[:8]}"
    # Request 12 is held by the receiver: the sink is killed while it waits for the answer.
    rx = FakeReceiver("webhook", path=f"/hooks/{URL_TOKEN}", hold_s={12: 10.0}).start()
    alerts = [
        sample_alert(f"K-{c}", state, rev, first_seq=c, score=1.5 + rev)
        for c in range(8)
        for rev, state in enumerate(["open", "update", "resolve"])
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for alert in alerts:
        producer.send(alerts_topic, key=alert.channel.encode(), value=alert.to_bytes())
    producer.flush()
    producer.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")}
    env.update(
        {
            "SD_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SD_KAFKA__ALERTS_TOPIC": alerts_topic,
            # Static membership: the restarted sink takes the killed one's place at once
            # instead of waiting out its session.
            "SD_KAFKA__GROUP_INSTANCE_ID": "sink-webhook-0",
            "SD_KAFKA__MAX_POLL_RECORDS": "5",
            "SD_REDIS__URL": redis_url,
            "SD_REDIS__KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}",
            "SD_SINKS__WEBHOOK__URL": rx.url,
            "SD_SINKS__WEBHOOK__HMAC_SECRET": HMAC_SECRET,
            "SD_SINKS__WEBHOOK__GROUP_ID": group,
            "SD_SINKS__DEAD_LETTER_TOPIC": dlq_topic,
            "SD_SINKS__DELIVERY__BACKOFF_INITIAL_S": "0.05",
            "SD_LOGGING__FORMAT": "json",
            "SD_LOGGING__LEVEL": "debug",
        }
    )
    cmd = [sys.executable, "-m", "stream_detector.cli", "sink", "webhook"]
    logs = [tmp_path / "sink-0.log", tmp_path / "sink-1.log"]

    with logs[0].open("wb") as out:
        first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: len(rx.requests) >= 13, 60, "request 12 in flight", first)
            first.send_signal(signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
    assert len(rx.accepted) == 12  # 0..11 acknowledged; 12 died with its sender

    with logs[1].open("wb") as out:
        second = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait(
                lambda: (
                    len(rx.accepted) >= len(alerts)
                    and group_caught_up(kafka_bootstrap, group, alerts_topic)
                ),
                60,
                "the rest delivered and committed",
                second,
            )
            time.sleep(0.5)  # a duplicate would show up now
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        finally:
            if second.poll() is None:
                second.kill()

    rx.stop()
    delivered = rx.accepted_events()
    assert len(delivered) == len(set(delivered)) == len(alerts), "no duplicate, none lost"
    for channel in {a.channel for a in alerts}:
        ids = [(a.alert_id, a.revision) for a in alerts if a.channel == channel]
        assert [e for e in delivered if e in ids] == ids, f"{channel} out of order"
    events = [json.loads(line) for p in logs for line in p.read_text().splitlines() if line]
    restarted = [e for e in events if e.get("event") == "duplicate_suppressed"]
    assert events and restarted, "the restart must have replayed delivered alerts"
    for path in logs:
        text = path.read_text()
        assert URL_TOKEN not in text and HMAC_SECRET not in text
