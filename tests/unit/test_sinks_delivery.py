"""Delivery of one request: verdicts, backoff, Retry-After, rate limit, against local receivers."""

import itertools
import random
import time

import pytest
import structlog
from pydantic import SecretStr

from stream_detector.settings import DeliverySettings, SinkSettings
from stream_detector.sinks import build_sink
from stream_detector.sinks.delivery import (
    Backoff,
    Deliverer,
    HttpTransport,
    Interrupted,
    RateLimiter,
    Response,
    Verdict,
    parse_retry_after,
    scrub,
)
from stream_detector.sinks.receivers import FakeReceiver, sample_alert

FAST = DeliverySettings(timeout_s=2, backoff_initial_s=0.05, backoff_max_s=0.2)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.ACCEPTED),
        (202, Verdict.ACCEPTED),
        (204, Verdict.ACCEPTED),
        (301, Verdict.REJECTED),
        (400, Verdict.REJECTED),
        (403, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (None, Verdict.RETRY),
    ],
)
def test_verdicts(status, verdict):
    assert Response(status).verdict is verdict


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7", now=0) == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    backoff = Backoff(initial_s=1.0, max_s=30.0, rng=random.Random(1))
    for retry, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 30), (40, 30)]:
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not lock-step


def test_rate_limiter_spaces_requests_and_honours_holds():
    now = [100.0]
    limiter = RateLimiter(2.0, clock=lambda: now[0])
    assert limiter.delay() == 0
    limiter.taken()
    assert limiter.delay() == pytest.approx(0.5)
    limiter.hold(3.0)
    assert limiter.delay() == pytest.approx(3.0)


def _deliverer(kind, url, settings=FAST, pauses=None, real_sleep=False):
    sinks = SinkSettings.model_validate(
        {
            "slack": {"webhook_url": SecretStr(url), "rate_per_s": 1000},
            "pagerduty": {"routing_key": SecretStr("k" * 32), "events_url": url},
            "webhook": {"url": SecretStr(url), "rate_per_s": 1000},
        }
    )
    sink = build_sink(kind, sinks)
    sink.rate_per_s = 1000

    def wait(seconds):
        if seconds > 0.01 and pauses is not None:  # not the 1 ms rate-limit spacing
            pauses.append(seconds)
        if real_sleep:
            time.sleep(seconds)
        return True

    return Deliverer(sink, HttpTransport(settings.timeout_s, sink.secrets()), settings, wait)


@pytest.fixture
def receivers():
    started = []

    def make(flavour, **kwargs):
        rx = FakeReceiver(flavour, **kwargs).start()
        started.append(rx)
        return rx

    yield make
    for rx in started:
        rx.stop()


def test_5xx_is_retried_with_backoff_until_accepted(receivers):
    rx = receivers("webhook", fail_first=3)
    pauses = []
    d = _deliverer("webhook", rx.url, pauses=pauses)
    (out,) = d.sink.render([sample_alert()])
    result = d.deliver(out)
    assert result.verdict is Verdict.ACCEPTED and result.attempts == 4
    assert len(rx.requests) == 4
    assert len(rx.accepted) == 1
    assert len(pauses) == 3
    assert 0.025 <= pauses[0] <= 0.05 and 0.05 <= pauses[1] <= 0.1 and 0.1 <= pauses[2] <= 0.2


def test_429_waits_for_retry_after(receivers):
    rx = receivers("slack", throttle_first=2, retry_after_s=0.3)
    pauses = []
    d = _deliverer("slack", rx.url, pauses=pauses, real_sleep=True)
    (out,) = d.sink.render([sample_alert()])
    assert d.deliver(out).verdict is Verdict.ACCEPTED
    assert pauses[0] == pytest.approx(0.3) and len(rx.requests) == 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(rx.requests)]
    assert all(g >= 0.29 for g in gaps), gaps


def test_pagerduty_400_is_never_retried(receivers):
    rx = receivers("pagerduty")
    d = _deliverer("pagerduty", rx.url)
    d.sink._routing_key = "too-short"  # PagerDuty answers 400 invalid event
    (out,) = d.sink.render([sample_alert()])
    result = d.deliver(out)
    assert result.verdict is Verdict.REJECTED and result.reason == "rejected_by_receiver"
    assert result.attempts == 1 and len(rx.requests) == 1
    assert result.response.status == 400 and "routing_key" in result.response.excerpt


def test_pagerduty_202_body(receivers):
    rx = receivers("pagerduty")
    d = _deliverer("pagerduty", rx.url)
    alert = sample_alert()
    (out,) = d.sink.render([alert])
    result = d.deliver(out)
    assert result.response.status == 202
    assert '"dedup_key": "' + alert.alert_id in result.response.excerpt
    assert rx.pd_alerts_created == 1


def test_connection_refused_then_up(receivers):
    rx = receivers("webhook")
    rx.down_for(0.6)
    d = _deliverer("webhook", rx.url, real_sleep=True)
    (out,) = d.sink.render([sample_alert()])
    started = time.monotonic()
    result = d.deliver(out)
    assert result.verdict is Verdict.ACCEPTED and result.attempts > 1
    assert time.monotonic() - started >= 0.5
    assert len(rx.accepted) == 1


def test_attempts_can_be_capped(receivers):
    rx = receivers("webhook", fail_first=100)
    d = _deliverer("webhook", rx.url, settings=FAST.model_copy(update={"max_attempts": 3}))
    (out,) = d.sink.render([sample_alert()])
    result = d.deliver(out)
    assert result.reason == "retries_exhausted" and result.attempts == 3


def test_stop_interrupts_a_retry_wait(receivers):
    rx = receivers("webhook", fail_first=100)
    d = _deliverer("webhook", rx.url)
    d.wait = lambda s: s <= 0  # stopping: any real pause is refused
    (out,) = d.sink.render([sample_alert()])
    with pytest.raises(Interrupted):
        d.deliver(out)


def test_secrets_never_reach_logs_or_excerpts(receivers):
    secret_path = "/services/T000/B000/sl4ckT0kenXYZ"
    rx = receivers("slack", fail_first=2, path=secret_path, reject=lambda body: True)
    rx.fail_status = 500
    d = _deliverer("slack", rx.url)
    (out,) = d.sink.render([sample_alert()])
    # A receiver that echoes the URL back must not leak it either.
    rx._invalid = lambda why: (400, {}, f"bad request to {rx.url}".encode())
    with structlog.testing.capture_logs() as logs:
        result = d.deliver(out)
        refused = HttpTransport(1.0, d.sink.secrets()).post(
            f"http://127.0.0.1:1{secret_path}", b"{}", {}
        )
    assert result.response.status == 400
    assert "sl4ckT0kenXYZ" not in result.response.excerpt
    assert refused.error == "connection_refused"
    assert logs and "sl4ckT0kenXYZ" not in repr(logs)
    assert scrub(f"x {rx.url} y", [rx.url]) == "x ********** y"
