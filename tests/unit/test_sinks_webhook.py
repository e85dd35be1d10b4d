import hashlib
import hmac

from pydantic import SecretStr

from stream_detector.records import AlertRecord
from stream_detector.settings import SinkSettings
from stream_detector.sinks.receivers import sample_alert
from stream_detector.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink


def _sink(secret: str | None) -> WebhookSink:
    webhook = {"url": SecretStr("https://example.test/hook")}
    if secret:
        webhook["hmac_secret"] = SecretStr(secret)
    return WebhookSink(SinkSettings.model_validate({"webhook": webhook}))


def test_body_is_the_alert_record():
    alert = sample_alert("W-1")
    (out,) = _sink(None).render([alert])
    assert AlertRecord.model_validate_json(out.body) == alert
    assert out.body == alert.to_bytes()


def test_hmac_signature_over_timestamp_and_raw_body():
    sink = _sink("s3cret")
    (out,) = sink.render([sample_alert()])
    headers = sink.attempt_headers(out, now=1_800_000_000.4)
    assert headers[TIMESTAMP_HEADER] == "1800000000"
    expected = hmac.new(b"s3cret", b"1800000000." + out.body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert headers["Idempotency-Key"] == f"{out.alerts[0].alert_id}:0"


def test_no_signature_without_a_secret():
    sink = _sink(None)
    (out,) = sink.render([sample_alert()])
    headers = sink.attempt_headers(out, now=1.0)
    assert SIGNATURE_HEADER not in headers and TIMESTAMP_HEADER not in headers
