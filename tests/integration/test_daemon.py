"""The daemon as a process against the real broker and Redis: alerts, drain, restart."""

from __future__ import annotations

from collections import defaultdict

import pytest

from producers.sender import TelemetrySender
from producers.synthetic import send_synthetic
from tests.integration.conftest import (
    SYNTHETIC_WINDOW,
    DaemonEnv,
    committed_offsets,
    end_offsets,
    read_alerts,
    wait_until,
)

pytestmark = pytest.mark.integration


def _env(kafka_bootstrap, redis_url, kafka_topics, checkpoint, **kw) -> DaemonEnv:
    return DaemonEnv(
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        checkpoint=checkpoint,
        telemetry=kafka_topics("telemetry"),
        alerts=kafka_topics("alerts"),
        dlq=kafka_topics("dlq"),
        **kw,
    )


def _all_committed(env: DaemonEnv) -> bool:
    ends = end_offsets(env.bootstrap, env.telemetry)
    got = committed_offsets(env.bootstrap, env.group, env.telemetry)
    return all(got.get(p, -1) == end for p, end in ends.items() if end > 0)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def test_alerts_cover_injected_anomalies_and_sigterm_drains(
    kafka_bootstrap, redis_url, kafka_topics, synthetic_channels, synthetic_checkpoint,
    start_daemon,
):
    env = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint)
    with TelemetrySender(kafka_bootstrap, env.telemetry) as sender:
        report = send_synthetic(sender, synthetic_channels, steps_per_record=5, progress=False)
    daemon = start_daemon(env)
    wait_until(lambda: _all_committed(env), 120, "every telemetry offset committed")
    assert daemon.terminate() == 0, daemon.tail()
    stopped = daemon.wait_for_event("daemon_stopped")
    assert stopped["records"] == report.records
    assert stopped["dead_letters"] == {}

    alerts = read_alerts(kafka_bootstrap, env.alerts)
    episodes: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for alert in alerts:
        episodes[alert.channel][alert.alert_id] = (alert.first_seq, alert.last_seq)
    for channel in synthetic_channels:
        found = list(episodes[channel.name].values())
        for start, end in channel.anomalies:
            # A window of W steps sees an anomaly until W-1 steps after it ends.
            reach = (start, end + SYNTHETIC_WINDOW - 1)
            assert any(_overlaps(ep, reach) for ep in found), (channel.name, (start, end), found)
        far = [
            ep for ep in found
            if not any(_overlaps(ep, (s - 50, e + SYNTHETIC_WINDOW + 50)) for s, e in channel.anomalies)
        ]
        assert len(far) <= 2, f"{channel.name}: false alarms far from any anomaly: {far}"
    # Every event of one episode shares its id; revisions are distinct within an episode.
    by_id = defaultdict(list)
    for alert in alerts:
        by_id[alert.alert_id].append(alert.revision)
    for revisions in by_id.values():
        assert sorted(revisions) == list(range(len(revisions)))
