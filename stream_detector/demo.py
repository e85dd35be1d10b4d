"""`stream-detector demo`: one SMAP channel, end to end, through real Kafka and Redis.

Train (unless a checkpoint exists) → start the daemon as its own process → replay the
channel's test split → wait until the daemon committed everything → stop it with SIGTERM →
print the alerts beside NASA's labelled ranges.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import click

from stream_detector.data.smap_msl import load_labels
from stream_detector.evaluation.metrics import overlaps
from stream_detector.records import AlertRecord
from stream_detector.settings import Settings
from stream_detector.topics import group_caught_up, read_topic


@dataclass(frozen=True)
class TrainingRecipe:
    window: int
    epochs: int
    patience: int
    train_stride: int
    hyperparameters: tuple[tuple[str, str], ...]


# The seed's LSTM autoencoder as the seed trains it (at most 100 epochs, early stopping).
FULL = TrainingRecipe(window=100, epochs=100, patience=10, train_stride=1, hyperparameters=())
# Small and quick, for tests and slow machines: same architecture, narrower and shorter.
QUICK = TrainingRecipe(
    window=50,
    epochs=15,
    patience=4,
    train_stride=2,
    hyperparameters=(("hidden1", "32"), ("hidden2", "16"), ("latent", "8")),
)


@dataclass
class DemoOutcome:
    channel: str
    labelled: list[tuple[int, int]]
    alerts: list[AlertRecord]
    window: int

    def episodes(self) -> dict[str, tuple[int, int]]:
        spans: dict[str, tuple[int, int]] = {}
        for alert in self.alerts:
            spans[alert.alert_id] = (alert.first_seq, alert.last_seq)
        return spans

    def overlapping(self) -> list[tuple[int, int]]:
        return [
            ep for ep in self.episodes().values() if any(overlaps(ep, lab) for lab in self.labelled)
        ]

    def far(self, margin: int) -> list[tuple[int, int]]:
        """Episodes more than `margin` steps away from every labelled range."""
        return [
            ep
            for ep in self.episodes().values()
            if not any(overlaps(ep, (s - margin, e + margin)) for s, e in self.labelled)
        ]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_detector.cli", *args]


def run_demo(
    settings: Settings,
    channel: str,
    recipe: TrainingRecipe,
    workdir: Path,
    *,
    retrain: bool = False,
    speed: float | None = None,
    timeout_s: float = 600.0,
    echo: bool = True,
) -> DemoOutcome:
    say = click.echo if echo else (lambda *_a, **_k: None)
    workdir.mkdir(parents=True, exist_ok=True)
    labels = [row for row in load_labels(settings.data.root) if row.chan_id == channel]
    if not labels:
        raise click.ClickException(f"{channel} has no row in labeled_anomalies.csv")
    labelled = sorted({seq for row in labels for seq in row.anomaly_sequences})

    checkpoint = workdir / f"demo-{channel}-w{recipe.window}.pt"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")}
    base_env.update(
        {
            "SD_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "SD_REDIS__URL": settings.redis.url.get_secret_value(),
            "SD_DATA__ROOT": str(settings.data.root),
            "SD_MODEL__CHECKPOINT": str(checkpoint),
            "SD_LOGGING__FORMAT": "json",
        }
    )
    if retrain or not checkpoint.exists():
        say(f"\n== 1/4 training lstm_ae on the train split of {channel} ==")
        hp = [arg for name, value in recipe.hyperparameters for arg in ("--hp", f"{name}={value}")]
        subprocess.run(
            _cli(
                "train",
                "--model",
                "lstm_ae",
                "--channel",
                channel,
                "--window",
                str(recipe.window),
                "--epochs",
                str(recipe.epochs),
                "--patience",
                str(recipe.patience),
                "--train-stride",
                str(recipe.train_stride),
                "--out",
                str(checkpoint),
                *hp,
            ),
            env=base_env | {"SD_LOGGING__LEVEL": "warning"},
            check=True,
        )
    else:
        say(f"\n== 1/4 using the trained model {checkpoint} (--retrain to train again) ==")

    run_id = uuid.uuid4().hex[:8]
    topics = {
        "SD_KAFKA__TELEMETRY_TOPIC": f"demo-{run_id}.telemetry",
        "SD_KAFKA__ALERTS_TOPIC": f"demo-{run_id}.alerts",
        "SD_KAFKA__DEAD_LETTER_TOPIC": f"demo-{run_id}.dlq",
        "SD_KAFKA__GROUP_ID": f"demo-{run_id}",
        "SD_REDIS__KEY_PREFIX": f"demo-{run_id}",
    }
    env = base_env | topics
    log_path = workdir / f"demo-{run_id}-daemon.log"
    say(f"\n== 2/4 starting the daemon (log: {log_path}) ==")
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(_cli("run"), env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for_log(log_path, "daemon_started", daemon, 120)
            telemetry = topics["SD_KAFKA__TELEMETRY_TOPIC"]
            say(f"\n== 3/4 replaying the test split of {channel} into {telemetry} ==")
            replay = [
                "replay",
                "--channel",
                channel,
                "--steps-per-record",
                "10",
                "--topic",
                topics["SD_KAFKA__TELEMETRY_TOPIC"],
            ]
            if speed is not None:
                replay += ["--speed", str(speed)]
            subprocess.run(_cli(*replay), env=env, check=True)
            say("\n== 4/4 waiting for the daemon to score and commit everything ==")
            deadline = time.monotonic() + timeout_s
            bootstrap = settings.kafka.bootstrap_servers
            while not group_caught_up(
                bootstrap, topics["SD_KAFKA__GROUP_ID"], topics["SD_KAFKA__TELEMETRY_TOPIC"]
            ):
                if daemon.poll() is not None:
                    raise click.ClickException(f"the daemon exited early; see {log_path}")
                if time.monotonic() > deadline:
                    raise click.ClickException(f"the daemon did not catch up in {timeout_s}s")
                time.sleep(0.5)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                code = daemon.wait(timeout=60)
                say(f"daemon stopped with SIGTERM, exit code {code}")
    raw = read_topic(settings.kafka.bootstrap_servers, topics["SD_KAFKA__ALERTS_TOPIC"])
    alerts = [AlertRecord.model_validate_json(r.value) for r in raw]
    return DemoOutcome(channel=channel, labelled=labelled, alerts=alerts, window=recipe.window)


def _wait_for_log(path: Path, event: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    needle = f'"event": "{event}"'.encode()
    while time.monotonic() < deadline:
        if needle in path.read_bytes():
            return
        if proc.poll() is not None:
            raise click.ClickException(f"the daemon exited ({proc.returncode}); see {path}")
        time.sleep(0.3)
    raise click.ClickException(f"the daemon did not start in {timeout_s}s; see {path}")


def print_outcome(outcome: DemoOutcome) -> bool:
    """Print alerts beside the labels; True when a labelled anomaly was alerted."""
    click.echo(f"\nAlerts for {outcome.channel} (sequence numbers are rows of the test split):")
    if not outcome.alerts:
        click.echo("  (none)")
    for a in outcome.alerts:
        thr = "n/a" if a.threshold is None else f"{a.threshold:.4g}"
        click.echo(
            f"  {a.state:<7} seq {a.first_seq:>5}..{a.last_seq:<5} score {a.score:.4g} "
            f"peak {a.peak_score:.4g} threshold {thr}  id {a.alert_id}"
        )
    click.echo(f"Labelled anomalies (labeled_anomalies.csv): {outcome.labelled}")
    hits = outcome.overlapping()
    far = outcome.far(margin=outcome.window * 2)
    click.echo(
        f"Episodes: {len(outcome.episodes())}; overlapping a labelled range: {len(hits)}; "
        f"more than {outcome.window * 2} steps from every label: {len(far)}"
    )
    found = bool(hits)
    click.echo(
        "RESULT: the labelled anomaly was alerted"
        if found
        else "RESULT: no alert overlapped the labelled anomaly"
    )
    return found
