from pydantic import SecretStr

from stream_detector.settings import SinkSettings
from stream_detector.sinks.pagerduty import PagerDutySink
from stream_detector.sinks.receivers import sample_alert

KEY = "R" * 32
SINK = PagerDutySink(SinkSettings.model_validate({"pagerduty": {"routing_key": SecretStr(KEY)}}))


def test_trigger_uses_alert_id_as_dedup_key():
    alert = sample_alert("B-2", score=2.5, threshold=1.0, duration_s=30)
    event = SINK.event(alert)
    assert event["event_action"] == "trigger"
    assert event["routing_key"] == KEY
    assert event["dedup_key"] == alert.alert_id
    payload = event["payload"]
    assert payload["source"] == "B-2"
    assert payload["severity"] == "error"  # 2.5x the threshold
    assert "B-2" in payload["summary"] and "2.5" in payload["summary"]
    assert payload["timestamp"].endswith("+00:00")
    details = payload["custom_details"]
    assert details["alert_id"] == alert.alert_id and details["duration_s"] == 30
    assert details["model"] == "lstm_ae@sample01"


def test_resolve_uses_the_same_key():
    opened = sample_alert("B-2")
    resolved = sample_alert("B-2", "resolve", 4)
    event = SINK.event(resolved)
    assert event == {"routing_key": KEY, "event_action": "resolve", "dedup_key": opened.alert_id}


def test_summary_is_clipped_to_1024_chars():
    event = SINK.event(sample_alert("Z" * 3000))
    assert len(event["payload"]["summary"]) == 1024


def test_severity_mapping():
    sev = [
        SINK.event(sample_alert(peak_score=p, threshold=1.0))["payload"]["severity"]
        for p in (1.1, 2.0, 4.0)
    ]
    assert sev == ["warning", "error", "critical"]
    assert SINK.event(sample_alert(threshold=None))["payload"]["severity"] == "error"
