"""Command lines of the producers: `sd-replay` and `sd-synthetic` (thin: parse, call, print).

`replay_command` and `synthetic_command` are plain click commands, so the main
`stream-detector` CLI can mount them as subcommands as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from kafka.errors import KafkaError

from producers import synthetic
from producers.replay import DEFAULT_PERIOD_S, ReplayReport, load_channels, stream_series
from producers.sender import TelemetrySender, TelemetrySendError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TOPIC = "telemetry"
DEFAULT_DATA_ROOT = "../shared/datasets/smap_msl"


def _kafka_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where both producers send to."""
    options = [
        click.option(
            "--bootstrap",
            envvar="SD_KAFKA__BOOTSTRAP_SERVERS",
            default=DEFAULT_BOOTSTRAP,
            show_default=True,
            show_envvar=True,
            help="Kafka bootstrap servers, host:port[,host:port...].",
        ),
        click.option(
            "--topic",
            envvar="SD_KAFKA__TELEMETRY_TOPIC",
            default=DEFAULT_TOPIC,
            show_default=True,
            show_envvar=True,
            help="Telemetry topic to write to.",
        ),
    ]
    return _apply(options, command)


def _stream_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How both producers chunk, pace and limit what they send."""
    options = [
        click.option(
            "--split",
            type=click.Choice(["train", "test"]),
            default="test",
            show_default=True,
            help="Which split of each channel to send.",
        ),
        click.option(
            "--steps-per-record",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Consecutive steps of one channel per Kafka record (the last may be shorter).",
        ),
        click.option(
            "--speed",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Pace at N× real time (a step per --period-s). Omit to send as fast as possible.",
        ),
        click.option(
            "--period-s",
            type=click.FloatRange(min=0),
            default=DEFAULT_PERIOD_S,
            show_default=True,
            help="Nominal seconds between steps: sets record timestamps and the pace.",
        ),
        click.option(
            "--limit-steps",
            type=click.IntRange(min=0),
            default=None,
            help="Send only the first N steps of each channel.",
        ),
        click.option("--no-progress", is_flag=True, help="Do not show a progress bar."),
    ]
    return _apply(options, command)


def _apply(
    options: Sequence[Callable[[Callable[..., Any]], Callable[..., Any]]],
    command: Callable[..., Any],
) -> Callable[..., Any]:
    # Reversed, so that --help lists the options in the order written here.
    for option in reversed(options):
        command = option(command)
    return command


@click.command(name="replay")
@_kafka_options
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_DATA_ROOT,
    envvar="SD_DATA__ROOT",
    show_envvar=True,
    show_default=True,
    help="SMAP/MSL folder holding train/<chan>.npy and test/<chan>.npy.",
)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    metavar="CHAN",
    help="Channel id to replay (repeat for several), e.g. --channel A-1 --channel P-1.",
)
@click.option("--all", "all_channels", is_flag=True, help="Replay every channel of the split.")
@_stream_options
def replay_command(
    bootstrap: str,
    topic: str,
    data_root: Path,
    channels: tuple[str, ...],
    all_channels: bool,
    split: str,
    steps_per_record: int,
    speed: float | None,
    period_s: float,
    limit_steps: int | None,
    no_progress: bool,
) -> None:
    """Replay SMAP/MSL telemetry channels into the telemetry topic as a live bus.

    All chosen channels advance together, step by step. Each record's seq is the row index
    in <data-root>/<split>/<chan>.npy (the coordinates of labeled_anomalies.csv) and its ts
    is start + seq * period_s. Records are keyed by channel, so a channel stays in order.
    """
    if bool(channels) == all_channels:
        raise click.UsageError("give either --channel (one or more times) or --all")
    # Load first: a wrong channel name should fail at once, not after connecting to Kafka.
    try:
        series = load_channels(data_root, list(channels) or None, split, limit_steps)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="--channel/--data-root") from None
    with _sending(bootstrap, topic) as sender:
        report = stream_series(
            sender,
            series,
            steps_per_record=steps_per_record,
            speed=speed,
            period_s=period_s,
            progress=not no_progress,
        )
    _print_summary(report, bootstrap, topic)


@click.command(name="synthetic")
@_kafka_options
@click.option(
    "--channels",
    "n_channels",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Number of generated channels (named synth-000, synth-001, ...).",
)
@click.option(
    "--length",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Steps per channel in each split.",
)
@click.option(
    "--features",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Values per step: column 0 is the signal, the rest slow covariates.",
)
@click.option(
    "--anomalies",
    "anomalies_per_channel",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Anomalies injected into each channel's test split.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--write-truth",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the anomaly ranges (inclusive, test coordinates) and kinds to this JSON file.",
)
@click.option(
    "--write-dataset",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also save the channels as DIR/train/<chan>.npy and DIR/test/<chan>.npy.",
)
@_stream_options
def synthetic_command(
    bootstrap: str,
    topic: str,
    split: str,
    steps_per_record: int,
    speed: float | None,
    period_s: float,
    limit_steps: int | None,
    no_progress: bool,
    n_channels: int,
    length: int,
    features: int,
    anomalies_per_channel: int,
    seed: int,
    write_truth: Path | None,
    write_dataset: Path | None,
) -> None:
    """Send seeded sine-like telemetry with injected anomalies (no data set needed).

    The same --seed always gives the same channels and anomalies. The train split is
    anomaly-free; the test split holds spikes, level shifts, frequency changes, noise
    bursts and flatlines, whose ranges --write-truth records.
    """
    try:
        channels = synthetic.make_synthetic_channels(
            n_channels=n_channels,
            length=length,
            n_features=features,
            seed=seed,
            anomalies_per_channel=anomalies_per_channel,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--length/--anomalies") from None
    if write_truth is not None:
        synthetic.write_truth(channels, write_truth)
    if write_dataset is not None:
        synthetic.write_dataset(channels, write_dataset)
    with _sending(bootstrap, topic) as sender:
        report = synthetic.send_synthetic(
            sender,
            channels,
            split=split,  # type: ignore[arg-type]  # click.Choice guarantees train/test
            steps_per_record=steps_per_record,
            speed=speed,
            period_s=period_s,
            limit_steps=limit_steps,
            progress=not no_progress,
        )
    _print_summary(report, bootstrap, topic)


@contextmanager
def _sending(bootstrap: str, topic: str) -> Iterator[TelemetrySender]:
    """A `TelemetrySender` whose Kafka failures end the command with a clean error message."""
    try:
        sender = TelemetrySender(bootstrap.split(","), topic)
    except KafkaError as exc:
        raise click.ClickException(f"cannot reach Kafka at {bootstrap}: {exc!r}") from None
    with sender:
        try:
            yield sender
        except (TelemetrySendError, KafkaError) as exc:
            raise click.ClickException(f"sending to {topic} at {bootstrap} failed: {exc}") from exc


def _print_summary(report: ReplayReport, bootstrap: str, topic: str) -> None:
    click.echo(f"{report.summary()} to {topic} at {bootstrap}")


def replay_main() -> None:
    """Entry point of the `sd-replay` console script."""
    replay_command()


def synthetic_main() -> None:
    """Entry point of the `sd-synthetic` console script."""
    synthetic_command()
