"""The daemon as a process against the real broker and Redis: alerts, drain, restart."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from producers.sender import TelemetrySender
from producers.synthetic import send_synthetic
from tests.integration.conftest import (
    SYNTHETIC_WINDOW,
    DaemonEnv,
    group_caught_up,
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
    return group_caught_up(env.bootstrap, env.group, env.telemetry)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def test_alerts_cover_injected_anomalies_and_sigterm_drains(
    kafka_bootstrap,
    redis_url,
    kafka_topics,
    synthetic_channels,
    synthetic_checkpoint,
    start_daemon,
):
    env = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint)
    with TelemetrySender(kafka_bootstrap, env.telemetry) as sender:
        report = send_synthetic(sender, synthetic_channels, steps_per_record=5, progress=False)
    daemon = start_daemon(env)
    wait_until(lambda: _all_committed(env), 240, "every telemetry offset committed", daemon)
    assert daemon.terminate() == 0, daemon.tail()
    stopped = daemon.wait_for_event("daemon_stopped")
    assert stopped["records"] == report.records
    assert stopped["dead_letters"] == {}

    alerts = read_alerts(kafka_bootstrap, env.alerts)
    episodes: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for alert in alerts:
        episodes[alert.channel][alert.alert_id] = (alert.first_seq, alert.last_seq)
    caught = missed = 0
    for channel in synthetic_channels:
        found = list(episodes[channel.name].values())
        for start, end in channel.anomalies:
            # A window of W steps sees an anomaly until W-1 steps after it ends.
            reach = (start, end + SYNTHETIC_WINDOW - 1)
            if any(_overlaps(ep, reach) for ep in found):
                caught += 1
            else:
                missed += 1
        far = [
            ep
            for ep in found
            if not any(
                _overlaps(ep, (s - 50, e + SYNTHETIC_WINDOW + 50)) for s, e in channel.anomalies
            )
        ]
        assert len(far) <= 2, f"{channel.name}: false alarms far from any anomaly: {far}"
    # The tiny test model misses the odd subtle anomaly (a flatline); most must be caught.
    assert caught >= 0.8 * (caught + missed), f"caught {caught}, missed {missed}: {dict(episodes)}"
    # The operator's view of the same topic.
    tail = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_detector.cli",
            "alerts",
            "tail",
            "--from-beginning",
            "--max",
            str(len(alerts)),
            "--timeout",
            "20",
            "--json",
        ],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tail.returncode == 0, tail.stderr
    tailed = [json.loads(line) for line in tail.stdout.splitlines()]
    assert sorted((a["alert_id"], a["revision"]) for a in tailed) == sorted(
        (a.alert_id, a.revision) for a in alerts
    )
    # Every event of one episode shares its id; revisions are distinct within an episode.
    by_id = defaultdict(list)
    for alert in alerts:
        by_id[alert.alert_id].append(alert.revision)
    for revisions in by_id.values():
        assert sorted(revisions) == list(range(len(revisions)))


def _alert_keys(alerts) -> set[tuple[str, int, str, int, int]]:
    return {(a.alert_id, a.revision, a.state, a.first_seq, a.last_seq) for a in alerts}


START_TS = 1_700_000_000.0
# Small polls and batches: a kill or an outage lands mid-stream, not after one big batch.
SLOW = {"SD_KAFKA__MAX_POLL_RECORDS": "25", "SD_BATCHING__MAX_WAIT_MS": "20"}


def _uninterrupted_run(env: DaemonEnv, channels, start_daemon) -> list:
    """The whole stream through one daemon that is never disturbed: the reference alerts."""
    with TelemetrySender(env.bootstrap, env.telemetry) as sender:
        send_synthetic(sender, channels, steps_per_record=2, start_ts=START_TS, progress=False)
    daemon = start_daemon(env)
    wait_until(lambda: _all_committed(env), 300, "reference run committed everything", daemon)
    assert daemon.terminate() == 0
    return read_alerts(env.bootstrap, env.alerts)


def _send_first_half(env: DaemonEnv, channels) -> int:
    half = len(channels[0].test) // 2
    with TelemetrySender(env.bootstrap, env.telemetry) as sender:
        send_synthetic(
            sender,
            channels,
            steps_per_record=2,
            start_ts=START_TS,
            limit_steps=half,
            progress=False,
        )
    return half


def _send_second_half(env: DaemonEnv, channels, half: int) -> None:
    with TelemetrySender(env.bootstrap, env.telemetry) as sender:
        for ch in channels:
            for seq in range(half, len(ch.test), 2):
                sender.send(ch.name, seq, START_TS + seq, ch.test[seq : seq + 2], 1.0)


def test_sigkill_mid_replay_loses_no_episode_and_duplicates_share_ids(
    kafka_bootstrap,
    redis_url,
    kafka_topics,
    synthetic_channels,
    synthetic_checkpoint,
    start_daemon,
):
    # Static membership, as an operator would run it: the restarted process takes over the
    # killed one's partitions at once instead of waiting out its session timeout.
    static = {**SLOW, "SD_KAFKA__GROUP_INSTANCE_ID": "sd-test-replica-0"}

    # The uninterrupted run is the reference.
    ref = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint, extra=SLOW)
    reference = _uninterrupted_run(ref, synthetic_channels, start_daemon)
    assert reference, "the reference run must alert for the test to mean anything"

    # The same stream, with SIGKILLs while the replay is half-way. Process A consumes the
    # first half and is killed; process B takes over (its channels' windows and thresholds
    # come back from Redis), the second half arrives, and B is killed after a random moment
    # of work (mid-batch, between publish and commit, or wherever it happens to be);
    # process C finishes.
    env = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint, extra=static)
    half = _send_first_half(env, synthetic_channels)
    first = start_daemon(env)
    wait_until(lambda: _all_committed(env), 300, "first half committed", first)
    first.kill()
    second = start_daemon(env)
    second.wait_for_event("partitions_assigned", timeout=120)
    _send_second_half(env, synthetic_channels, half)
    second.wait_for_event("channel_state_restored", timeout=120)
    time.sleep(random.uniform(0.0, 1.5))
    second.kill()
    partial = read_alerts(kafka_bootstrap, env.alerts)
    third = start_daemon(env)
    third.wait_for_event("partitions_assigned", timeout=120)
    wait_until(lambda: _all_committed(env), 300, "the third process committed everything", third)
    assert third.terminate() == 0

    recovered = read_alerts(kafka_bootstrap, env.alerts)
    assert _alert_keys(reference) == _alert_keys(recovered), "every episode event, none lost"
    assert len(recovered) >= len(reference)
    # Duplicates (published before the kill, again after) are the same event: same id.
    assert _alert_keys(partial) <= _alert_keys(reference)


def test_a_redis_outage_mid_stream_pages_once_per_episode(
    kafka_bootstrap,
    redis_server,
    redis_url,
    kafka_topics,
    synthetic_channels,
    synthetic_checkpoint,
    start_daemon,
):
    """Redis goes down mid-stream and comes back from its snapshot: nothing pages twice.

    The daemon holds its offsets uncommitted and retries the state save until Redis answers;
    the episodes, their ids and their events equal those of an uninterrupted run.
    """
    ref = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint, extra=SLOW)
    reference = _uninterrupted_run(ref, synthetic_channels, start_daemon)
    assert any(a.state == "open" for a in reference), "the reference run must page"

    env = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint, extra=SLOW)
    half = _send_first_half(env, synthetic_channels)
    daemon = start_daemon(env)
    wait_until(lambda: _all_committed(env), 300, "first half committed", daemon)
    redis_server.stop()
    try:
        _send_second_half(env, synthetic_channels, half)
        outage = daemon.wait_for_event("state_store_unavailable", timeout=120)
        assert outage["during"] == "save"
        time.sleep(2.0)  # a few retries, with the consumer kept in its group
        assert daemon.alive(), daemon.tail()
        assert not _all_committed(env), "offsets must wait for the state save"
    finally:
        redis_server.start()
    daemon.wait_for_event("state_store_back", timeout=120)
    wait_until(lambda: _all_committed(env), 300, "second half committed", daemon)
    assert daemon.terminate() == 0, daemon.tail()

    recovered = read_alerts(kafka_bootstrap, env.alerts)
    assert _alert_keys(recovered) == _alert_keys(reference)
    opens = [a for a in recovered if a.state == "open"]
    assert len({a.alert_id for a in opens}) == len(opens), "one page per episode"
    stopped = daemon.wait_for_event("daemon_stopped")
    assert stopped["store_retries"] >= 2


def test_threshold_state_lives_in_redis_under_the_model_version(
    kafka_bootstrap,
    redis_url,
    kafka_topics,
    synthetic_channels,
    synthetic_checkpoint,
    start_daemon,
):
    import redis as redis_lib

    from stream_detector.serving import ServedModel

    env = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint)
    with TelemetrySender(kafka_bootstrap, env.telemetry) as sender:
        send_synthetic(sender, synthetic_channels, limit_steps=300, progress=False)
    daemon = start_daemon(env)
    wait_until(lambda: _all_committed(env), 240, "everything committed", daemon)
    assert daemon.terminate() == 0
    version = ServedModel.load(synthetic_checkpoint, device="cpu").model_info.version
    client = redis_lib.Redis.from_url(redis_url)
    for channel in synthetic_channels:
        stored = client.hgetall(f"{env.key_prefix}:state:{version}:{channel.name}")
        assert stored, f"no state for {channel.name}"
        assert int(stored[b"last_offset"]) >= 0
        assert len(stored[b"buffer"]) == SYNTHETIC_WINDOW * 2 * 4  # W rows × 2 features × f32


def test_sigterm_while_starting_exits_cleanly(
    kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint, start_daemon
):
    env = _env(kafka_bootstrap, redis_url, kafka_topics, synthetic_checkpoint)
    daemon = start_daemon(env)
    daemon.wait_for_event("daemon_starting")  # about to load the model and connect
    assert daemon.terminate() == 0, daemon.tail()
