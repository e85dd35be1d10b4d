"""`make bench`: throughput and latency of the daemon, against a bare kafka-python consumer.

1. Throughput. A fixed volume of SMAP test telemetry is produced first; then the daemon
   (its own process, as deployed) consumes the backlog; channel-steps per second are counted
   from its first assignment to its last commit. A kafka-python consumer that does nothing
   reads the same topic, and the ratio daemon/bare says what scoring costs.
2. Latency. The daemon runs with a scores topic; telemetry is produced at a fixed rate below
   capacity; each score record's broker timestamp minus the producing record's timestamp
   is one end-to-end latency (same machine, same clock).

Needs Kafka and Redis running (`make services-up`). Prints what it measured and against what.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from kafka import KafkaConsumer

from producers.replay import load_channels, stream_series
from producers.sender import TelemetrySender
from stream_detector.records import ScoreRecord
from stream_detector.settings import load_settings
from stream_detector.topics import end_offsets, group_caught_up, read_topic

BENCH_MODEL_ARGS = [
    "--model", "lstm_ae", "--window", "50", "--epochs", "15", "--patience", "4",
    "--train-stride", "2",
    "--hp", "hidden1=32", "--hp", "hidden2=16", "--hp", "latent=8",
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_detector.cli", *args]


def _wait(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise click.ClickException(f"the daemon exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


class _Daemon:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            _cli("run"), env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def logged(self, event: str) -> bool:
        return f'"event": "{event}"'.encode() in self.log_path.read_bytes()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self._log.close()
        return code


def _bare_consume(bootstrap: str, topic: str, records: int) -> float:
    """Seconds a do-nothing kafka-python consumer group takes to read `records` records."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    seen = 0
    started = None
    try:
        while seen < records:
            polled = consumer.poll(timeout_ms=200)
            if polled and started is None:
                started = time.perf_counter()
            seen += sum(len(v) for v in polled.values())
        consumer.commit()
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        consumer.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--channels",
    "n_channels",
    default=10,
    show_default=True,
    help="How many SMAP channels (their full test split) make the fixed volume.",
)
@click.option("--steps-per-record", default=10, show_default=True)
@click.option(
    "--latency-rate",
    default=1000.0,
    show_default=True,
    help="Channel-steps per second produced during the latency phase.",
)
@click.option("--latency-seconds", default=20.0, show_default=True)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("artifacts"), show_default=True
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Serve this SMAP checkpoint instead of training the small benchmark model "
    "(e.g. artifacts/demo-A-1-w100.pt, the seed-size model `make demo` trains).",
)
@click.option(
    "--daemon-env",
    "daemon_env",
    multiple=True,
    metavar="SD_NAME=VALUE",
    help="A setting for the measured daemon (repeatable), e.g. "
    "SD_THRESHOLD__KIND=recent_max to compare thresholds. Every other SD_* variable of the "
    "calling shell is dropped, so a run measures the defaults unless told otherwise.",
)
def main(
    n_channels: int,
    steps_per_record: int,
    latency_rate: float,
    latency_seconds: float,
    workdir: Path,
    checkpoint: Path | None,
    daemon_env: tuple[str, ...],
) -> None:
    """Measure the daemon's throughput and latency against a bare consumer."""
    overrides = _parse_daemon_env(daemon_env)
    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    root = settings.data.root
    workdir.mkdir(parents=True, exist_ok=True)
    from stream_detector.data.smap_msl import channel_ids

    channels = channel_ids(root, "SMAP")[:n_channels]
    checkpoint = checkpoint or workdir / "bench-A-1-w50.pt"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")} | {
        "SD_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "SD_REDIS__URL": settings.redis.url.get_secret_value(),
        "SD_DATA__ROOT": str(root),
        "SD_MODEL__CHECKPOINT": str(checkpoint),
        "SD_MODEL__CHANNELS": "[" + ",".join(f'"{c}"' for c in channels) + "]",
        "SD_LOGGING__FORMAT": "json",
    }
    if not checkpoint.exists():
        click.echo("training the benchmark model (lstm_ae, window 50, on A-1) ...")
        subprocess.run(
            _cli(
                "train",
                "--channel",
                "A-1",
                "--out",
                str(checkpoint),
                "--no-progress",
                *BENCH_MODEL_ARGS,
            ),
            env=base_env | {"SD_LOGGING__LEVEL": "warning"},
            check=True,
        )

    base_env |= overrides
    series = load_channels(root, channels, "test")
    steps = sum(len(s.values) for s in series)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-{run}.telemetry"
    env = base_env | {
        "SD_KAFKA__TELEMETRY_TOPIC": topic,
        "SD_KAFKA__ALERTS_TOPIC": f"bench-{run}.alerts",
        "SD_KAFKA__DEAD_LETTER_TOPIC": f"bench-{run}.dlq",
        "SD_KAFKA__GROUP_ID": f"bench-{run}",
        "SD_REDIS__KEY_PREFIX": f"bench-{run}",
    }
    click.echo(
        f"volume: {len(channels)} SMAP channels, {steps:,} channel-steps, "
        f"{steps_per_record} steps per record"
    )
    with TelemetrySender(bootstrap, topic) as sender:
        report = stream_series(sender, series, steps_per_record=steps_per_record, progress=True)
    records = sum(end_offsets(bootstrap, topic).values())

    daemon = _Daemon(env, workdir / f"bench-{run}-daemon.log")
    _wait(lambda: daemon.logged("partitions_assigned"), 120, "partition assignment", daemon.proc)
    started = time.perf_counter()
    _wait(
        lambda: group_caught_up(bootstrap, env["SD_KAFKA__GROUP_ID"], topic),
        3600,
        "the daemon to commit the backlog",
        daemon.proc,
    )
    daemon_s = time.perf_counter() - started
    daemon.stop()
    bare_s = _bare_consume(bootstrap, topic, records)

    # Latency: paced production into a daemon that publishes every score.
    lat_topic = f"bench-{run}-lat.telemetry"
    scores_topic = f"bench-{run}-lat.scores"
    lat_env = env | {
        "SD_KAFKA__TELEMETRY_TOPIC": lat_topic,
        "SD_KAFKA__SCORES_TOPIC": scores_topic,
        "SD_KAFKA__GROUP_ID": f"bench-{run}-lat",
        "SD_REDIS__KEY_PREFIX": f"bench-{run}-lat",
    }
    daemon = _Daemon(lat_env, workdir / f"bench-{run}-latency-daemon.log")
    _wait(lambda: daemon.logged("partitions_assigned"), 120, "partition assignment", daemon.proc)
    per_channel = int(latency_rate * latency_seconds / len(series))
    paced = [type(s)(s.name, s.values[:per_channel]) for s in series]
    with TelemetrySender(bootstrap, lat_topic, linger_ms=0) as sender:
        stream_series(
            sender,
            paced,
            steps_per_record=1,
            speed=latency_rate / len(series),
            period_s=1.0,
            progress=True,
        )
    _wait(
        lambda: group_caught_up(bootstrap, lat_env["SD_KAFKA__GROUP_ID"], lat_topic),
        600,
        "the daemon to commit the paced stream",
        daemon.proc,
    )
    daemon.stop()
    produced = {}
    for rec in read_topic(bootstrap, lat_topic, timeout_s=120):
        produced[(rec.key.decode(), int(_seq_of(rec.value)))] = rec.timestamp
    latencies = []
    for rec in read_topic(bootstrap, scores_topic, timeout_s=120):
        score = ScoreRecord.model_validate_json(rec.value)
        sent = produced.get((score.channel, score.seq))
        if sent is not None:
            latencies.append(rec.timestamp - sent)
    lat = np.asarray(latencies, dtype=np.float64)

    daemon_rate = steps / daemon_s
    bare_rate = steps / bare_s
    click.echo("")
    click.echo(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"python {platform.python_version()}, device cpu (torch threads 1)"
    )
    from stream_detector.serving import ServedModel

    served = ServedModel.load(checkpoint, device="cpu")
    hp = json.dumps(served.checkpoint.detector.hyperparameters, sort_keys=True)
    click.echo(
        f"model: {served.model_info.name} {served.model_info.version} ({checkpoint}), "
        f"window {served.window}, hyperparameters {hp}, stride {served.stride}: "
        "one window scored per step"
    )
    click.echo(
        "daemon settings: " + (" ".join(f"{k}={v}" for k, v in overrides.items()) or "the defaults")
    )
    click.echo(
        f"produce: {report.steps_per_second:,.0f} channel-steps/s ({report.records:,} records)"
    )
    click.echo(
        f"daemon throughput: {daemon_rate:,.0f} channel-steps/s "
        f"({steps:,} steps in {daemon_s:.1f} s, backlog, committed)"
    )
    click.echo(
        f"bare kafka-python consumer: {bare_rate:,.0f} channel-steps/s "
        f"({records:,} records in {bare_s:.2f} s)"
    )
    click.echo(f"ratio daemon/bare: {daemon_rate / bare_rate:.3f}")
    if len(lat):
        click.echo(
            f"end-to-end latency at {latency_rate:,.0f} channel-steps/s, 1 step per record "
            f"(produce → score on the scores topic, n={len(lat):,}): "
            f"p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, "
            f"max {lat.max():.0f} ms"
        )
    else:
        click.echo("end-to-end latency: no score records matched (check the daemon log)")


# What the benchmark itself decides for each daemon it starts.
_BENCH_OWNED = (
    "SD_KAFKA__",
    "SD_REDIS__",
    "SD_DATA__",
    "SD_MODEL__CHECKPOINT",
    "SD_MODEL__CHANNELS",
)


def _parse_daemon_env(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("SD_"):
            raise click.BadParameter(
                f"expected SD_NAME=VALUE, got {pair!r}", param_hint="--daemon-env"
            )
        if name.startswith(_BENCH_OWNED):
            raise click.BadParameter(
                f"{name} is set by the benchmark itself (its topics, stores and model)",
                param_hint="--daemon-env",
            )
        overrides[name] = value
    return overrides


def _seq_of(raw: bytes) -> int:
    import json

    return int(json.loads(raw)["seq"])


if __name__ == "__main__":
    main()
