import json

import pytest
from pydantic import SecretStr

from stream_detector.settings import SinkSettings
from stream_detector.sinks.base import Severity
from stream_detector.sinks.receivers import sample_alert
from stream_detector.sinks.slack import MAX_BLOCKS, MAX_MESSAGE_CHARS, SlackSink, message_chars

SETTINGS = SinkSettings.model_validate(
    {"slack": {"webhook_url": SecretStr("https://hooks.slack.test/T0/B0/xyz")}}
)


@pytest.fixture
def sink():
    return SlackSink(SETTINGS)


def test_one_section_per_incident_with_the_facts(sink):
    alert = sample_alert("A-7", score=5.0, threshold=1.0, duration_s=125, first_ts=1_760_000_000)
    msg = sink.message([alert])
    assert msg["text"]  # the notification fallback
    header, section = msg["blocks"]
    assert header["type"] == "header"
    assert section["block_id"] == f"{alert.alert_id}:0"
    text = section["text"]["text"]
    for fact in ["OPEN", "A-7", "critical", "score 5", "threshold 1", "2025-10-09 08:53:20 UTC"]:
        assert fact in text
    assert "2m 5s" in text and "lstm_ae@sample01" in text


def test_resolve_posts_a_resolution(sink):
    msg = sink.message([sample_alert("A-7", "resolve", 3, score=0.1, peak_score=9.0)])
    section = msg["blocks"][1]
    assert "RESOLVED" in section["text"]["text"]
    assert "peak score 9" in section["text"]["text"]
    assert "resolved" in msg["text"]


def test_update_only_when_severity_rises(sink):
    warn = sample_alert(state="update", revision=1, peak_score=1.5)  # warning
    crit = sample_alert(state="update", revision=2, peak_score=9.0)  # critical
    assert not sink.wants(warn, Severity.WARNING)
    assert not sink.wants(warn, Severity.ERROR)
    assert sink.wants(crit, Severity.ERROR)
    assert sink.wants(warn, None)


def test_big_groups_split_under_block_kit_limits(sink):
    alerts = [sample_alert(f"CH-{i}", first_seq=i) for i in range(200)]
    out = sink.render(alerts)
    # ~45 incidents fit in the size limit; the 49-per-message block ceiling is tested below
    assert len(out) == 5
    for o in out:
        msg = json.loads(o.body)
        assert len(msg["blocks"]) <= MAX_BLOCKS
        assert message_chars(msg) <= MAX_MESSAGE_CHARS
        assert msg["text"] and len(msg["text"]) <= 1000
    assert [a for o in out for a in o.alerts] == alerts


def test_size_limit_splits_long_messages_and_clips_text(sink):
    long_channel = "X" * 5000
    alerts = [sample_alert(long_channel + str(i), first_seq=i) for i in range(6)]
    out = sink.render(alerts)
    assert len(out) > 1
    for o in out:
        msg = json.loads(o.body)
        for block in msg["blocks"][1:]:
            assert len(block["text"]["text"]) <= 3000
        assert message_chars(msg) <= MAX_MESSAGE_CHARS or len(o.alerts) == 1


def test_mrkdwn_control_characters_are_escaped(sink):
    msg = sink.message([sample_alert("a<b>&c")])
    assert "a&lt;b&gt;&amp;c" in msg["blocks"][1]["text"]["text"]


def test_block_ceiling_caps_a_message_at_49_incidents(sink, monkeypatch):
    monkeypatch.setattr("stream_detector.sinks.slack.MAX_MESSAGE_CHARS", 10**9)
    out = sink.render([sample_alert(f"CH-{i}", first_seq=i) for i in range(100)])
    assert [len(o.alerts) for o in out] == [49, 49, 2]
    assert all(len(json.loads(o.body)["blocks"]) == len(o.alerts) + 1 for o in out)
