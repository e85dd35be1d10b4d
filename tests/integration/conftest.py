"""Daemon-level fixtures: trained checkpoints and the daemon as a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from producers.synthetic import SyntheticChannel, make_synthetic_channels
from stream_detector.models.base import FitConfig
from stream_detector.records import AlertRecord
from stream_detector.settings import Settings
from stream_detector.topics import (  # noqa: F401  (re-exported for the tests)
    committed_offsets,
    end_offsets,
    group_caught_up,
    read_topic,
)
from stream_detector.training.checkpoint import save_checkpoint
from stream_detector.training.trainer import train_on_series

REPO = Path(__file__).resolve().parents[2]

SYNTHETIC_WINDOW = 32
TINY_LSTM = {"hidden1": 32, "hidden2": 16, "latent": 4, "dropout": 0.0, "score_features": [0]}

# One torch thread: on a 2-core host two threads fight the broker and the daemon under test
# and training gets tens of times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_channels() -> list[SyntheticChannel]:
    return make_synthetic_channels(
        n_channels=3, length=1500, n_features=2, seed=7, anomalies_per_channel=2
    )


@pytest.fixture(scope="session")
def synthetic_checkpoint(
    synthetic_channels: list[SyntheticChannel], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A small LSTM autoencoder trained on the synthetic channels' clean train split."""
    ckpt = train_on_series(
        "lstm_ae",
        [c.train for c in synthetic_channels],
        window=SYNTHETIC_WINDOW,
        channels=[c.name for c in synthetic_channels],
        dataset="synthetic",
        hyperparameters=TINY_LSTM,
        fit_config=FitConfig(epochs=30, patience=4, batch_size=64, seed=0),
        train_stride=2,
        progress=False,
    )
    path = tmp_path_factory.mktemp("models") / "synthetic.pt"
    save_checkpoint(ckpt, path)
    return path


@dataclass
class DaemonEnv:
    """Settings of one daemon deployment, as the SD_* environment a user would set."""

    bootstrap: str
    redis_url: str
    checkpoint: Path
    telemetry: str
    alerts: str
    dlq: str
    scores: str | None = None
    group: str = field(default_factory=lambda: f"sd-{uuid.uuid4().hex[:8]}")
    key_prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    extra: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")}
        env.update(
            {
                "SD_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "SD_KAFKA__TELEMETRY_TOPIC": self.telemetry,
                "SD_KAFKA__ALERTS_TOPIC": self.alerts,
                "SD_KAFKA__DEAD_LETTER_TOPIC": self.dlq,
                "SD_KAFKA__GROUP_ID": self.group,
                "SD_REDIS__URL": self.redis_url,
                "SD_REDIS__KEY_PREFIX": self.key_prefix,
                "SD_MODEL__CHECKPOINT": str(self.checkpoint),
                "SD_MODEL__DEVICE": "cpu",
                "SD_LOGGING__FORMAT": "json",
                "SD_THRESHOLD__PARAMS": '{"warmup": 50}',
            }
        )
        if self.scores:
            env["SD_KAFKA__SCORES_TOPIC"] = self.scores
        env.update(self.extra)
        return env


class DaemonProcess:
    """`stream-detector run` as a child process, the way an operator runs it."""

    def __init__(self, env: DaemonEnv, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_detector.cli", "run"],
            cwd=REPO,
            env=env.environ(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def wait_for_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.log_events():
                if ev.get("event") == name:
                    return ev
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.2)
        raise AssertionError(f"no {name!r} event within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self._wait(timeout)

    def kill(self) -> int:
        self.proc.kill()
        return self._wait(10.0)

    def _wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
        return code


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[DaemonEnv], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(env: DaemonEnv) -> DaemonProcess:
        proc = DaemonProcess(env, tmp_path / f"daemon-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.alive():
            proc.kill()


def read_alerts(bootstrap: str, topic: str) -> list[AlertRecord]:
    return [AlertRecord.model_validate_json(r.value) for r in read_topic(bootstrap, topic)]


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, *daemons: DaemonProcess
) -> None:
    """Poll `predicate`; on timeout fail with what was awaited and the daemons' last log lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    logs = "\n".join(f"--- {d.log_path.name}\n{d.tail(25)}" for d in daemons)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


def in_process_settings(
    bootstrap: str, redis_url: str, topics: dict[str, str], checkpoint: Path, name: str
) -> Settings:
    """Settings of a daemon run in the test's own process: the topics of `topics` (tel,
    alerts, dlq, scores), a fresh consumer group and Redis key prefix named after `name`."""
    return Settings(
        kafka={
            "bootstrap_servers": bootstrap,
            "telemetry_topic": topics["tel"],
            "alerts_topic": topics["alerts"],
            "dead_letter_topic": topics["dlq"],
            "scores_topic": topics["scores"],
            "group_id": f"{name}-{uuid.uuid4().hex[:8]}",
        },
        redis={"url": redis_url, "key_prefix": f"{name}{uuid.uuid4().hex[:6]}"},
        model={"checkpoint": checkpoint, "device": "cpu"},
    )


def run_until_caught_up(daemon: Any, settings: Settings, what: str, timeout: float = 90) -> None:
    """Run an in-process `DetectorDaemon` in a thread until its group has committed the whole
    telemetry topic, then stop it and wait for its drain."""
    import threading

    worker = threading.Thread(target=daemon.run, kwargs={"max_seconds": timeout}, daemon=True)
    worker.start()
    kafka = settings.kafka
    try:
        wait_until(
            lambda: group_caught_up(kafka.bootstrap_servers, kafka.group_id, kafka.telemetry_topic),
            timeout,
            what,
        )
    finally:
        daemon.request_stop()
        worker.join(timeout=60)
