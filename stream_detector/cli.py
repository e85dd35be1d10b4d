"""The `stream-detector` command: thin commands that parse, call and print."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog

from stream_detector import __version__
from stream_detector.errors import ConfigError, StreamDetectorError
from stream_detector.logging import configure_logging
from stream_detector.settings import Settings, load_settings

if TYPE_CHECKING:
    from stream_detector.evaluation.threshold_grid import VariantResult
    from stream_detector.models.base import FitConfig, RecipeDefaults


def limit_torch_threads(settings: Settings) -> None:
    """Hold torch to ``SD_MODEL__TORCH_THREADS`` threads: N processes side by side (``--shard``)
    each left at torch's default oversubscribe the cores, and on two cores an epoch then
    took 5 to 220 s instead of about 2 (crossfit_replay, docs/threshold-race.md)."""
    if settings.model.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.model.torch_threads)


_MODEL_DEFAULT = "[default: the model's own; `stream-detector models` lists them]"


_model_option = click.option(
    "--model",
    "kind",
    default=None,
    help="Detector kind (any registered) [default: lstm_dt with --hp n_predictions=10, the "
    "default configuration's detector; --model lstm_dt alone has n_predictions 1].",
)

_scaling_option = click.option(
    "--scaling",
    type=click.Choice(["standard", "none"]),
    default=None,
    help="Standardise every column on the train split, or keep raw values (telemanom's "
    f"setup: SMAP/MSL values are already in (-1, 1), command flags 0/1). {_MODEL_DEFAULT}",
)

_split_option = click.option(
    "--split",
    type=click.Choice(["chronological", "shuffled"]),
    default=None,
    help="Which fifth of the training windows validates (early stopping): the last one, or "
    f"a random draw as telemanom's shuffled windows gave it. {_MODEL_DEFAULT}",
)


_data_root_option = click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="SMAP/MSL folder [default: SD_DATA__ROOT].",
)

_fit_option = click.option(
    "--fit",
    "fit_items",
    multiple=True,
    metavar="NAME=VALUE",
    help="A setting of the training loop (repeatable): lr, lr_patience, lr_factor, min_lr, "
    "min_delta (the fall of the validation loss that counts as better), restore_best "
    "(false: keep the last epoch's weights, as Keras did), lr_schedule (false: no "
    "ReduceLROnPlateau), optimizer (adam, or keras_adam: Keras 2.1's Adam).",
)


def _grid_file_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--thresholds GRID` of the commands that read grid results back."""
    return click.option(
        "--thresholds",
        "grid",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help=help,
    )


def _recipe(kind: str, given: dict[str, Any]) -> RecipeDefaults:
    """The model's recipe defaults, with the command-line options of the same names that
    were set (``ctx.params``) on top."""
    from stream_detector.models import get_detector_class

    try:
        defaults = get_detector_class(kind).recipe_defaults
    except KeyError as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    names = {f.name for f in fields(defaults)}
    return replace(defaults, **{k: v for k, v in given.items() if k in names and v is not None})


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stream-detector")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Streaming anomaly detection for spacecraft telemetry.

    Settings come from SD_* environment variables (sections joined by `__`, e.g.
    SD_KAFKA__BOOTSTRAP_SERVERS) and a .env file; `stream-detector config` shows them.
    """
    ctx.ensure_object(dict)
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.obj["settings"] = settings
    configure_logging(settings.logging.level, settings.logging.format)


@main.command()
@click.pass_context
def config(ctx: click.Context) -> None:
    """Print the effective settings as JSON (secrets masked)."""
    click.echo(json.dumps(_settings(ctx).masked(), indent=2, default=str))


@main.command()
@click.option(
    "--max-seconds", type=float, default=None, help="Stop after this long (tests, demos)."
)
@click.pass_context
def run(ctx: click.Context, max_seconds: float | None) -> None:
    """Run the detector daemon until SIGTERM/SIGINT: Kafka in, alerts out.

    On SIGTERM it scores what it holds, publishes, commits and exits 0.
    """
    from stream_detector.app import build_daemon

    settings = _settings(ctx)
    # A SIGTERM while we load the model and connect must still end in a clean exit 0.
    early_stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: early_stop.set())
    limit_torch_threads(settings)
    structlog.get_logger(__name__).info(
        "daemon_starting", checkpoint=str(settings.model.checkpoint)
    )
    try:
        daemon = build_daemon(settings)
    except StreamDetectorError as exc:
        raise click.ClickException(str(exc)) from None
    daemon.install_signal_handlers()
    if early_stop.is_set():
        daemon.request_stop()
    daemon.run(max_seconds=max_seconds)


@main.command()
@click.option(
    "--cache",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The score cache the daemon's checkpoint was made from (`evaluate --score-cache`, "
    "then `combine`): its recipe trains each channel's two fold models, kept in its crossfit/ "
    "folder (trained here if missing, as `crossfit_replay` does).",
)
@click.option(
    "--dataset",
    type=click.Choice(["smap", "msl", "both"]),
    default="both",
    show_default=True,
    help="Whose channels to prime.",
)
@click.option("--channel", "channels", multiple=True, help="Only these channels (repeatable).")
@_data_root_option
@click.option(
    "--scale",
    type=click.Choice(["model", "none"]),
    default="model",
    show_default=True,
    help="model: rescale each history to the daemon's model, by the ratio of its scores to "
    "the fold model's on the rows of train neither fitted (its validation part); none: prime "
    "on the fold models' scores as they are.",
)
@click.option("--dry-run", is_flag=True, help="Compute the primed states; write nothing.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def prime(
    ctx: click.Context,
    cache: Path,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
    scale: str,
    dry_run: bool,
    no_progress: bool,
) -> None:
    """Prime the daemon's thresholds from each channel's history before it goes live.

    The engine runs over the channel's train split as models that never saw it score it
    (each half by a model trained on the other), rescaled to the daemon's model, and its
    threshold state is written to Redis, under the daemon's checkpoint and settings, for the
    daemon to start from. A channel that already has a state keeps it: priming never replaces
    a live state. On SMAP/MSL, primed channels scored lower than cold ones either way
    (docs/thresholds.md, "Priming"): prime where the live stream runs like the history.
    """
    from stream_detector.app import load_model, redis_client
    from stream_detector.evaluation.runner import dataset_rows
    from stream_detector.priming import by_reason, primed_from_cache
    from stream_detector.thresholds.store import RedisStateStore

    settings = _settings(ctx)
    limit_torch_threads(settings)
    root = data_root or Path(settings.data.root)
    try:
        model = load_model(settings)
        wanted = list(channels) or list(
            dict.fromkeys(r.chan_id for r in dataset_rows(root, dataset))
        )
        primed = primed_from_cache(
            settings, model, root, cache, wanted, progress=not no_progress, scale=scale == "model"
        )
    except (StreamDetectorError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    written = 0
    if not dry_run:
        store = RedisStateStore(
            redis_client(settings), settings.redis.key_prefix, model.model_info.version
        )
        written = store.prime(primed.states)
    click.echo(
        f"primed {len(primed.states)} channel(s) for model {model.model_info.version}: "
        + (
            "dry run, nothing written"
            if dry_run
            else f"{written} written, {len(primed.states) - written} kept their existing state"
        )
    )
    if primed.factors:
        import statistics

        factors = sorted(primed.factors.values())
        click.echo(
            f"  {len(factors)} history(ies) rescaled to the model, factor "
            f"{factors[0]:.2f} to {factors[-1]:.2f} (median {statistics.median(factors):.2f})"
        )
    for line in by_reason(primed.unscaled):
        click.echo(f"  primed unscaled, {line}")
    for reason in primed.unprimed:
        click.echo(f"  not primed: {reason}")


@main.command()
@click.option(
    "--channel",
    "channels",
    multiple=True,
    required=True,
    help="Channel id to train on (repeatable), e.g. --channel A-1.",
)
@_model_option
@click.option("--window", type=int, default=None, help=f"Window length W. {_MODEL_DEFAULT}")
@click.option(
    "--stride", type=int, default=1, show_default=True, help="Serve a window every S steps."
)
@click.option(
    "--train-stride",
    type=int,
    default=None,
    help=f"Stride between training windows (raise it to train faster). {_MODEL_DEFAULT}",
)
@_scaling_option
@_split_option
@click.option("--epochs", type=int, default=None, help=_MODEL_DEFAULT)
@click.option("--batch-size", type=int, default=None, help=_MODEL_DEFAULT)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option(
    "--patience",
    type=int,
    default=None,
    help=f"Early stopping patience (epochs without a better validation loss). {_MODEL_DEFAULT}",
)
@click.option(
    "--score-features",
    default="0",
    show_default=True,
    help="Columns the score is computed on: comma-separated indices, or 'all'. "
    "SMAP/MSL column 0 is the telemetry value; the others are command flags.",
)
@click.option(
    "--hp",
    "hyper",
    multiple=True,
    metavar="NAME=VALUE",
    help="Model hyperparameter, e.g. --hp hidden1=64 (repeatable).",
)
@_fit_option
@click.option("--seed", type=int, default=0, show_default=True)
@_data_root_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint path [default: SD_MODEL__CHECKPOINT].",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def train(
    ctx: click.Context,
    channels: tuple[str, ...],
    kind: str | None,
    window: int | None,
    stride: int,
    train_stride: int | None,
    scaling: str | None,
    split: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float,
    patience: int | None,
    score_features: str,
    hyper: tuple[str, ...],
    fit_items: tuple[str, ...],
    seed: int,
    data_root: Path | None,
    out: Path | None,
    no_progress: bool,
) -> None:
    """Train a detector on the train split of SMAP/MSL channels and save one checkpoint."""
    from stream_detector.training.checkpoint import save_checkpoint
    from stream_detector.training.trainer import train_on_dataset

    settings = _settings(ctx)
    limit_torch_threads(settings)
    root = data_root or settings.data.root
    target = out or settings.model.checkpoint
    kind, hyperparameters = _detector(kind, _hyperparameters(score_features, hyper))
    recipe = _recipe(kind, ctx.params)
    fit = _fit_config(
        fit_items,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=lr,
        patience=recipe.patience,
        seed=seed,
    )
    started = time.perf_counter()
    try:
        ckpt = train_on_dataset(
            root,
            list(channels),
            kind,
            window=recipe.window,
            stride=stride,
            train_stride=recipe.train_stride,
            scaling=recipe.scaling,  # type: ignore[arg-type]
            split=recipe.split,  # type: ignore[arg-type]
            hyperparameters=hyperparameters,
            fit_config=fit,
            progress=not no_progress,
        )
    except (FileNotFoundError, KeyError, ValueError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, target)
    cal = ckpt.calibration
    click.echo(
        f"saved {target}  model={kind} version={ckpt.model_version} channels={','.join(channels)} "
        f"window={recipe.window} train-score p50={cal.quantiles.get('p50', float('nan')):.4g} "
        f"p99={cal.quantiles.get('p99', float('nan')):.4g}  "
        f"({time.perf_counter() - started:.1f}s)"
    )


@main.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The ensemble's checkpoint file, or its score-cache folder when MEMBERS are folders.",
)
@click.option(
    "--combine",
    "combination",
    type=click.Choice(("mean", "geometric", "gated")),  # models.ensemble.COMBINATIONS, sans torch
    default="mean",
    show_default=True,
    help="How the members' scores make the ensemble's: their mean (an 'or': one large error "
    "is enough), their geometric mean (an 'and': large only where every member's is), or "
    "'gated': the geometric mean of the first member and each other member whose median "
    "score on the validation windows is above 0 (chosen per channel).",
)
@_data_root_option
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def combine(
    ctx: click.Context,
    members: tuple[Path, ...],
    out: Path,
    combination: str,
    data_root: Path | None,
    no_progress: bool,
) -> None:
    """Make an `ensemble` from MEMBERS trained one by one, without training again.

    MEMBERS are checkpoints trained alike (same channels, window, scaler and fit config), or
    score-cache folders of `evaluate --score-cache` (then every channel they all hold is
    combined into the --out folder, stamped as `evaluate --model ensemble` stamps it, and so
    is every fold model in their crossfit/ folders when each has one). The ensemble's score
    is its members' mean, geometric mean or gated geometric mean (--combine); its calibration
    is computed again from its own scores on the channels' train split.
    """
    from stream_detector.data.smap_msl import load_series
    from stream_detector.errors import CheckpointError
    from stream_detector.evaluation.ensemble_cache import combine_caches
    from stream_detector.training.checkpoint import load_checkpoint, save_checkpoint
    from stream_detector.training.ensemble import combine_checkpoints

    settings = _settings(ctx)
    limit_torch_threads(settings)
    root = data_root or settings.data.root
    try:
        if all(member.is_dir() for member in members):
            written = combine_caches(
                list(members), out, root, progress=not no_progress, combine=combination
            )
            folds = sum(".fold" in name for name in written)
            click.echo(
                f"combined {len(written) - folds} channels and {folds} fold models into {out}"
            )
            return
        if any(member.is_dir() for member in members):
            raise click.BadParameter("give checkpoint files or cache folders, not both")
        checkpoints = [load_checkpoint(member, device="cpu") for member in members]
        series = [load_series(root, chan, "train") for chan in checkpoints[0].channels]
        combined = combine_checkpoints(checkpoints, series, combination)
    except (CheckpointError, FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    save_checkpoint(combined, out)
    click.echo(
        f"saved {out}  model=ensemble version={combined.model_version} "
        f"members={','.join(c.model_version for c in checkpoints)} "
        f"counted={','.join(str(int(on)) for on in getattr(combined.detector, 'gate', []))} "
        f"train-score p99={combined.calibration.quantiles['p99']:.4g}"
    )


@main.command()
def thresholds() -> None:
    """List the registered threshold strategies, each parameter with the default the daemon
    builds it with, and the threshold and episode rules your settings select now."""
    import inspect

    from stream_detector.settings import Settings, ThresholdSettings
    from stream_detector.thresholds import available_thresholds
    from stream_detector.thresholds.base import threshold_factory

    for kind in available_thresholds():
        signature = inspect.signature(threshold_factory(kind)).parameters.values()
        # ewma_sigma takes its defaults from the settings' own fields, not from its class.
        built = ThresholdSettings(kind=kind).strategy_params()
        described = []
        for p in signature:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            default = built.get(p.name, p.default)
            empty = default is inspect.Parameter.empty
            described.append(p.name if empty else f"{p.name}={json.dumps(default)}")
        click.echo(f"{kind:<16} {', '.join(described)}")
    settings = Settings()
    rules = settings.alerts.model_dump(mode="json")
    click.echo(
        f"\nselected now: SD_THRESHOLD__KIND={settings.threshold.kind} "
        f"SD_THRESHOLD__PARAMS='{json.dumps(settings.threshold.params)}' "
        f"calibration={settings.threshold.calibration}; episodes {json.dumps(rules)}"
    )
    click.echo(
        "(parameters go in SD_THRESHOLD__PARAMS as JSON; docs/thresholds.md says what each does)"
    )


@main.command()
def models() -> None:
    """List the registered detector kinds and how `train` and `evaluate` train each by default."""
    from stream_detector.models import DEFAULT_DETECTOR, available_detectors, get_detector_class

    click.echo(
        f"{'kind':<20} {'window':>6} {'scaling':>8} {'epochs':>6} {'patience':>8} "
        f"{'batch':>5} {'train stride':>12} {'split':>13}"
    )
    for kind in available_detectors():
        d = get_detector_class(kind).recipe_defaults
        click.echo(
            f"{kind:<20} {d.window:>6} {d.scaling:>8} {d.epochs:>6} {d.patience:>8} "
            f"{d.batch_size:>5} {d.train_stride:>12} {d.split:>13}"
        )
    hyper = " ".join(
        f"--hp {k}={json.dumps(v)}" for k, v in DEFAULT_DETECTOR["hyperparameters"].items()
    )
    click.echo(
        f"\nwithout --model: {DEFAULT_DETECTOR['kind']} {hyper} "
        "(docs/threshold-race.md, eighth look)"
    )


def _detector(kind: str | None, hyperparameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The kind and hyperparameters to build: the given ones, or without --model the default
    detector's, the command line's --hp overriding its own."""
    if kind is not None:
        return kind, hyperparameters
    from stream_detector.models import DEFAULT_DETECTOR

    return DEFAULT_DETECTOR["kind"], {**DEFAULT_DETECTOR["hyperparameters"], **hyperparameters}


def _hyperparameters(score_features: str, hyper: tuple[str, ...]) -> dict[str, Any]:
    hyperparameters: dict[str, Any] = {}
    if score_features.strip().lower() != "all":
        try:
            hyperparameters["score_features"] = [int(c) for c in score_features.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"expected indices like 0 or 0,3 or 'all', got {score_features!r}",
                param_hint="--score-features",
            ) from None
    hyperparameters.update(_parse_hp(item) for item in hyper)
    return hyperparameters


def _parse_hp(item: str, param_hint: str = "--hp") -> tuple[str, Any]:
    name, sep, raw = item.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=param_hint)
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


# Settings of the training loop that --fit may set; the others have options of their own.
FIT_SETTINGS = (
    "lr",
    "lr_patience",
    "lr_factor",
    "min_lr",
    "min_delta",
    "restore_best",
    "lr_schedule",
    "optimizer",
)


def _fit_config(items: tuple[str, ...], **given: Any) -> FitConfig:
    """The FitConfig of the options and the --fit NAME=VALUE pairs; a bad one is named."""
    from stream_detector.models.base import FitConfig

    settings = dict(given)
    for item in items:
        name, value = _parse_hp(item, "--fit")
        if name not in FIT_SETTINGS:
            raise click.BadParameter(
                f"unknown setting {name!r}; --fit takes {', '.join(FIT_SETTINGS)}",
                param_hint="--fit",
            )
        settings[name] = value
    try:
        return FitConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--fit") from None


@main.command()
@_model_option
@click.option(
    "--dataset", type=click.Choice(["smap", "msl", "both"]), default="smap", show_default=True
)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="Only these channels (repeatable); default: every labelled channel.",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Only every N-th of the selected channels, starting at the I-th (0-based): run N "
    "processes with --shard 0/N … N-1/N and one --score-cache to train in parallel "
    "(`make race JOBS=N`).",
)
@click.option("--window", type=int, default=None, help=_MODEL_DEFAULT)
@click.option("--epochs", type=int, default=None, help=_MODEL_DEFAULT)
@click.option("--patience", type=int, default=None, help=_MODEL_DEFAULT)
@click.option("--batch-size", type=int, default=None, help=_MODEL_DEFAULT)
@click.option("--train-stride", type=int, default=None, help=_MODEL_DEFAULT)
@_scaling_option
@_split_option
@click.option(
    "--fit-part",
    type=click.Choice(["all", "before-held-out"]),
    default="all",
    show_default=True,
    help="Train on the whole train split, or only on the part before its held-out fifth, "
    "so that the label-free columns measured there are out of sample for any --split.",
)
@click.option(
    "--score-features",
    default="0",
    show_default=True,
    help="Columns the score is computed on, or 'all'.",
)
@click.option(
    "--hp", "hyper", multiple=True, metavar="NAME=VALUE", help="Model hyperparameter (repeatable)."
)
@_fit_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [default: artifacts/eval/<model>-<dataset>-<time>].",
)
@click.option("--no-plots", is_flag=True, help="Skip the per-channel plots.")
@click.option(
    "--thresholds",
    "grid",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON list of threshold variants (see docs/threshold-grid.json): train and "
    "score each channel once, judge the scores with every variant.",
)
@click.option(
    "--score-cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --thresholds: keep each channel's checkpoint and scores here and reuse them "
    "on the next run with the same recipe (no retraining).",
)
@click.option(
    "--injection-copies",
    type=click.IntRange(min=1),
    default=None,
    help="With --thresholds: inject each held-out train part this many times, with other "
    "seeds, for the label-free columns [default: 8].",
)
@click.option(
    "--all-slots",
    is_flag=True,
    help="With --thresholds: fill every slot of each copy, the injection before the ninth "
    "look (docs/threshold-race.md), instead of one anomaly per copy.",
)
@_data_root_option
@click.pass_context
def evaluate(
    ctx: click.Context,
    kind: str | None,
    dataset: str,
    channels: tuple[str, ...],
    shard: str | None,
    window: int | None,
    epochs: int | None,
    patience: int | None,
    batch_size: int | None,
    train_stride: int | None,
    scaling: str | None,
    split: str | None,
    fit_part: str,
    score_features: str,
    hyper: tuple[str, ...],
    fit_items: tuple[str, ...],
    seed: int,
    out: Path | None,
    no_plots: bool,
    grid: Path | None,
    score_cache: Path | None,
    injection_copies: int | None,
    all_slots: bool,
    data_root: Path | None,
) -> None:
    """Train per channel, score each test split causally through the daemon's engine, and
    report event-level metrics beside telemanom's published run.

    Thresholds and episode rules come from the settings (SD_THRESHOLD__*, SD_ALERTS__*),
    exactly as the daemon reads them. Writes channels.csv, summary.md and plots/.
    """
    from stream_detector.evaluation.runner import ModelRecipe, write_report
    from stream_detector.evaluation.runner import evaluate as run_evaluation

    settings = _settings(ctx)
    limit_torch_threads(settings)
    root = data_root or settings.data.root
    kind, hyperparameters = _detector(kind, _hyperparameters(score_features, hyper))
    defaults = _recipe(kind, ctx.params)
    recipe = ModelRecipe(
        kind=kind,
        window=defaults.window,
        hyperparameters=hyperparameters,
        fit=_fit_config(
            fit_items,
            epochs=defaults.epochs,
            patience=defaults.patience,
            batch_size=defaults.batch_size,
            seed=seed,
        ),
        train_stride=defaults.train_stride,
        scaling=defaults.scaling,  # type: ignore[arg-type]
        split=defaults.split,  # type: ignore[arg-type]
        fit_part=fit_part.replace("-", "_"),  # type: ignore[arg-type]
    )
    target = out or Path("artifacts/eval") / f"{kind}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if score_cache is not None and grid is None:
        raise click.BadParameter("needs --thresholds", param_hint="--score-cache")
    if injection_copies is not None and grid is None:
        raise click.BadParameter("needs --thresholds", param_hint="--injection-copies")
    if all_slots and grid is None:
        raise click.BadParameter("needs --thresholds", param_hint="--all-slots")
    selected = selected_channels(root, dataset, channels, shard)
    if grid is not None:
        from stream_detector.evaluation.threshold_grid import (
            INJECTION_COPIES,
            RESULTS_FILE,
            incumbent_variant,
            load_grid,
            run_grid,
            save_results,
            write_grid,
        )

        variants = load_grid(grid)
        results = run_grid(
            root,
            dataset,
            recipe,
            settings,
            variants,
            selected,
            cache=score_cache,
            injection_copies=injection_copies or INJECTION_COPIES,
            one_per_copy=not all_slots,
        )
        incumbent = incumbent_variant(variants, settings)
        doc = write_grid(results, root, kind, target, variants, incumbent)
        save_results(results, target / RESULTS_FILE)  # for `grid-report` to merge shards
        click.echo(doc.read_text())
        return
    try:
        report = run_evaluation(root, dataset, recipe, settings, channels=selected)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = write_report(report, root, target, plots=not no_plots)
    click.echo(summary.read_text())
    click.echo(
        f"wrote {target}/channels.csv, {summary}" + ("" if no_plots else f", {target}/plots/")
    )


def selected_channels(
    root: Path, dataset: str, channels: Sequence[str], shard: str | None
) -> list[str] | None:
    """The channels a command's --channel and --shard select: None for every one."""
    selected = list(channels) or None
    return selected if shard is None else shard_channels(root, dataset, selected, shard)


def shard_channels(root: Path, dataset: str, given: list[str] | None, shard: str) -> list[str]:
    """The I-th of N interleaved shares of the labelled channels (or of those given)."""
    from stream_detector.evaluation.runner import dataset_rows

    index, sep, count = shard.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise click.BadParameter(
            f"expected I/N with 0 <= I < N, got {shard!r}", param_hint="--shard"
        )
    try:
        rows = dataset_rows(root, dataset)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    # dict.fromkeys: each channel once (P-2 has two rows), in file order.
    ordered = list(dict.fromkeys(r.chan_id for r in rows if given is None or r.chan_id in given))
    share = ordered[i::n]
    if not share:
        raise click.ClickException(f"shard {shard} of {len(ordered)} channels is empty")
    return share


@main.command("grid-report")
@click.argument("shares", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_grid_file_option("The grid the shares were run with.")
@click.option("--model", "kind", default="lstm_dt", show_default=True, help="For the title.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@_data_root_option
@click.pass_context
def grid_report(
    ctx: click.Context,
    shares: tuple[Path, ...],
    grid: Path,
    kind: str,
    out: Path,
    data_root: Path | None,
) -> None:
    """One grid report from the shares of `evaluate --thresholds ... --shard I/N`: each
    SHARE is an --out folder of one (or its grid-results.pkl). The channels are put back in
    the label file's order, so the report (and its bootstrap) is the one a single run over
    all of them writes. Shares run with different variants of the grid over the same
    channels are joined: a variant added to a grid is judged alone, then reported with the
    rest (the variants in the grid's order)."""
    from stream_detector.evaluation.runner import dataset_rows
    from stream_detector.evaluation.threshold_grid import (
        RESULTS_FILE,
        incumbent_variant,
        join_variants,
        load_grid,
        load_results,
        merge_results,
        save_results,
        write_grid,
    )

    settings = _settings(ctx)
    root = data_root or settings.data.root
    try:
        parts = [load_results(p) for p in shares]
        order = list(dict.fromkeys(r.chan_id for r in dataset_rows(root, "both")))
        by_grid: dict[tuple[str, ...], list[dict[str, VariantResult]]] = {}
        for part in parts:
            by_grid.setdefault(tuple(part), []).append(part)
        joined = join_variants([merge_results(same, order) for same in by_grid.values()])
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    variants = load_grid(grid)
    if sorted(v.name for v in variants) != sorted(joined):
        raise click.BadParameter("not the grid the shares were run with", param_hint="--thresholds")
    results = {v.name: joined[v.name] for v in variants}
    doc = write_grid(results, root, kind, out, variants, incumbent_variant(variants, settings))
    save_results(results, out / RESULTS_FILE)
    click.echo(doc.read_text())


def _two_names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, str]:
    labels = [n.strip() for n in value.split(",")]
    if len(labels) != 2 or not all(labels):
        raise click.BadParameter(f"expected two names, got {value!r}")
    return labels[0], labels[1]


_names_option = click.option(
    "--names",
    default="first,second",
    show_default=True,
    callback=_two_names,
    help="What to call FIRST and SECOND in the table, comma-separated.",
)


@main.command("grid-compare")
@click.argument("first", type=click.Path(exists=True, path_type=Path))
@click.argument("second", type=click.Path(exists=True, path_type=Path))
@_grid_file_option("The grid both were run with.")
@click.option(
    "--variant",
    default=None,
    help="The threshold to compare them under [default: the grid's variant that the "
    "current settings build, the default configuration].",
)
@_names_option
@_data_root_option
@click.pass_context
def grid_compare(
    ctx: click.Context,
    first: Path,
    second: Path,
    grid: Path,
    variant: str | None,
    names: tuple[str, str],
    data_root: Path | None,
) -> None:
    """Two detectors under one threshold: FIRST and SECOND are grid results (an --out
    folder of `evaluate --thresholds` or `grid-report`, or its grid-results.pkl) of the same
    grid over the same channels. Prints both rows and how often FIRST stays ahead of SECOND
    on the written rule's label-free key in paired draws of the channels."""
    from stream_detector.evaluation.threshold_grid import (
        compare_detectors,
        incumbent_variant,
        load_grid,
        load_results,
    )

    settings = _settings(ctx)
    name = variant or incumbent_variant(load_grid(grid), settings)
    if name is None:
        raise click.BadParameter(
            "no variant of the grid is the current settings' configuration: name one",
            param_hint="--variant",
        )
    try:
        runs = [load_results(first), load_results(second)]
        if any(name not in run for run in runs):
            raise ValueError(f"variant {name!r} is not in both results")
        doc = compare_detectors(
            runs[0][name], runs[1][name], names, data_root or settings.data.root
        )
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Under `{name}`:\n\n{doc}")


@main.command("proxy-check")
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@_grid_file_option("The grid the results were run with (to find the default configuration).")
@click.pass_context
def proxy_check(ctx: click.Context, results: Path, grid: Path) -> None:
    """The written rule's proxy checked without labels, on one grid's RESULTS (an --out
    folder of `evaluate --thresholds` or `grid-report`, or its grid-results.pkl): whether
    the injected F1 ranks the thresholds the same way on the injection's two halves
    (reliability, bar 0.8); whether the held-out false-episode rate ranks them as their
    alarm rate on the test streams does (transfer, bar 0.7); and whether the injected F1
    ranks them as the share of test points they flag does (volume, bar 0.5 at most). The
    last two read the test split, never its labels. Chooses nothing. Exits with 1 when any
    test fails its bar on a data set (docs/threshold-race.md, 26th and 28th looks)."""
    from stream_detector.evaluation.proxy_check import (
        all_passed,
        check_proxy,
        proxy_check_report,
    )
    from stream_detector.evaluation.threshold_grid import (
        incumbent_variant,
        load_grid,
        load_results,
    )

    try:
        run = load_results(results)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    variants = load_grid(grid)
    if [v.name for v in variants] != list(run):
        raise click.BadParameter(
            "not the grid the results were run with", param_hint="--thresholds"
        )
    if not any(res.injected for res in run.values()):
        raise click.ClickException("the results hold no injected run: nothing to check")
    checks = check_proxy(run)
    incumbent = incumbent_variant(variants, _settings(ctx))
    click.echo(proxy_check_report(run, checks, incumbent), nl=False)
    ctx.exit(0 if all_passed(checks) else 1)


@main.command("held-out-error")
@click.argument("first", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_names_option
@_data_root_option
@click.pass_context
def held_out_error(
    ctx: click.Context,
    first: Path,
    second: Path,
    names: tuple[str, str],
    data_root: Path | None,
) -> None:
    """Two score caches (--score-cache folders of `evaluate`), on the predictor's own
    yardstick: each model's mean raw score on its channel's held-out part, per data set, and
    how often FIRST's mean is the lower one in paired draws of the channels. Label-free; it
    judges a recipe only where both caches were made with --fit-part before-held-out."""
    from stream_detector.evaluation.held_out_error import compare_held_out, held_out_table

    try:
        comparisons = compare_held_out(first, second, data_root or _settings(ctx).data.root)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(held_out_table(comparisons, names), nl=False)


@main.command("prediction-error")
@click.argument("cache", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--run",
    "run",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A telemanom results file [default: its 2018-05-19 run, the reference row].",
)
@click.option("--channels", "per_channel", is_flag=True, help="Also list every channel.")
@_data_root_option
@click.pass_context
def prediction_error(
    ctx: click.Context, cache: Path, run: Path | None, per_channel: bool, data_root: Path | None
) -> None:
    """An lstm_dt score cache (a --score-cache folder of `evaluate`) on telemanom's own
    yardstick: the mean one-step prediction error over the test split divided by the range
    of the test values, per data set, beside the `normalized_pred_error` of telemanom's
    published run. Says whether our model predicts the test streams as well as telemanom's
    did. Reads no label, but the test split: it chooses nothing."""
    from stream_detector.evaluation.prediction_error import (
        cache_normalized_errors,
        compare_with_run,
        prediction_error_table,
        published_normalized_errors,
    )
    from stream_detector.evaluation.reference import REFERENCE_FILE

    root = Path(data_root or _settings(ctx).data.root)
    source = run or root / REFERENCE_FILE
    try:
        comparisons = compare_with_run(
            cache_normalized_errors(cache, root), published_normalized_errors(source), root
        )
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    name = "telemanom 2018-05-19" if run is None else f"telemanom {source.stem}"
    click.echo(prediction_error_table(comparisons, name, per_channel), nl=False)


@main.command()
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trials", type=int, default=None, help="Override the study's number of trials.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [default: artifacts/tune/<study name>-<time>].",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@click.pass_context
def tune(
    ctx: click.Context, config_file: Path, trials: int | None, out: Path | None, no_progress: bool
) -> None:
    """Search a model's hyperparameters (and thresholds) with Optuna, as CONFIG_FILE says.

    CONFIG_FILE is TOML or JSON (see docs/tune-example.toml): the model kind, the channels,
    the fixed recipe, the ranges to search and the objective: val_loss (label-free, the
    validation split of each channel's train data), injected_f1 (label-free: synthetic
    anomalies injected into that split; thresholds can be searched) or event_f1 /
    composite_f1 (reads the test labels: the best value is in-sample). Writes trials.csv,
    best.json, history.png.
    """
    from stream_detector.tuning import load_tune_config, run_study

    settings = _settings(ctx)
    limit_torch_threads(settings)
    try:
        config = load_tune_config(config_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    target = out or Path("artifacts/tune") / f"{config.study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = run_study(config, settings, target, trials=trials, progress=not no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"best {config.study.objective}: {result.best_value:.6g}")
    for name, value in sorted(result.best_params.items()):
        click.echo(f"  {name} = {value}")
    click.echo(
        f"wrote {result.trials_csv}, {result.best_json}"
        + (f", {result.plot}" if result.plot else "")
    )


@main.group()
def alerts() -> None:
    """Read the alerts topic."""


@alerts.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert, not the newest.")
@click.option("--channel", "channels", multiple=True, help="Only these channels (repeatable).")
@click.option("--max", "max_alerts", type=int, default=None, help="Exit after N alerts.")
@click.option(
    "--timeout", type=float, default=None, help="Exit after this many seconds without a new alert."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw alert records (JSON lines).")
@click.pass_context
def alerts_tail(
    ctx: click.Context,
    from_beginning: bool,
    channels: tuple[str, ...],
    max_alerts: int | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Print alerts as they arrive."""
    from stream_detector.alert_tail import tail_alerts

    settings = _settings(ctx)
    for alert in tail_alerts(
        settings.kafka,
        from_beginning=from_beginning,
        channels=set(channels) or None,
        max_alerts=max_alerts,
        idle_timeout_s=timeout,
    ):
        if as_json:
            click.echo(alert.model_dump_json())
        else:
            thr = "n/a" if alert.threshold is None else f"{alert.threshold:.4g}"
            click.echo(
                f"{alert.state:<7} {alert.channel:<8} seq {alert.first_seq}..{alert.last_seq}  "
                f"score {alert.score:.4g} (peak {alert.peak_score:.4g}) threshold {thr}"
                f"  id {alert.alert_id}  model {alert.model.name}@{alert.model.version}"
            )
        sys.stdout.flush()


@main.command()
@click.option(
    "--channel", default="A-1", show_default=True, help="SMAP/MSL channel with a labelled anomaly."
)
@click.option(
    "--quick",
    is_flag=True,
    help="A smaller, faster model (window 50, 32/16 units, 15 epochs) instead of "
    "the seed's (window 100, 128/64 units, up to 100 epochs).",
)
@click.option("--retrain", is_flag=True, help="Train even if the demo checkpoint exists.")
@click.option(
    "--speed",
    type=float,
    default=None,
    help="Replay at N× real time (1 step = 1 s); default: as fast as possible.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("artifacts"),
    show_default=True,
    help="Where the checkpoint and the daemon log go.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    channel: str,
    quick: bool,
    retrain: bool,
    speed: float | None,
    workdir: Path,
) -> None:
    """Train on a SMAP channel, stream its test split through Kafka, show the alerts.

    Needs Kafka and Redis running (`make services-up`); `make demo` does it all.
    """
    from stream_detector.demo import FULL, QUICK, print_outcome, run_demo

    outcome = run_demo(
        _settings(ctx), channel, QUICK if quick else FULL, workdir, retrain=retrain, speed=speed
    )
    if not print_outcome(outcome):
        ctx.exit(1)


def _mount_producers() -> None:
    try:
        from producers.cli import replay_command, synthetic_command
    except ImportError:  # producers are optional in a slim install
        return
    main.add_command(replay_command, "replay")
    main.add_command(synthetic_command, "synthetic")


_mount_producers()


def _mount_sinks() -> None:
    from stream_detector.sinks.cli import silence_group, sink_group

    main.add_command(sink_group, "sink")
    main.add_command(silence_group, "silence")


_mount_sinks()

if __name__ == "__main__":
    main()
